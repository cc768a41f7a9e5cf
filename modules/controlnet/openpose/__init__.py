"""Openpose for ControlNet: the pose JSON editors exchange (`pose_json`), the skeleton image the openpose models
expect (`draw`), and the CMU networks that find poses in a photo (`detect`, which runs `networks` through `body`
for people and `hand_face` for hands and faces; `maps` holds their shared resizing).

Submodules are imported where used: `detect` pulls in torch and scipy, the JSON and drawing code only numpy and cv2.
"""
