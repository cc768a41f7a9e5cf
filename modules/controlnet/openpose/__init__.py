"""Openpose for ControlNet: the pose JSON editors exchange (`pose_json`), the skeleton image the openpose models
expect (`draw`), and the CMU body/hand/face networks that find poses in a photo (`detect`).

Submodules are imported where used: `detect` pulls in torch, the JSON and drawing code only numpy and cv2.
"""
