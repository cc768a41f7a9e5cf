"""Face alignment and paste-back, as facexlib's FaceRestoreHelper does it for A1111 (upscale factor 1, 512×512
faces): a similarity transform puts the five detected landmarks onto the FFHQ template, the face is warped into a
512×512 crop, restored, warped back with the inverse transform and blended in with a feathered mask.

OpenCV does the geometry (estimateAffinePartial2D with LMEDS, warpAffine, invertAffineTransform). The mask is
facexlib's square one (eroded, then blurred in proportion to the face's size); A1111 asks facexlib for a face-parsing
mask instead (a second network, parsing_parsenet.pth), which this module does not use.
"""
from __future__ import annotations

import cv2
import numpy as np

FACE_SIZE = 512
# Where the eyes, the nose tip and the mouth corners sit in an FFHQ-aligned 512×512 face (facexlib's template).
FFHQ_TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                              [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float32)
BORDER_GRAY = (135, 133, 132)   # what facexlib fills outside the image with


def face_transform(landmarks: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """The 2×3 similarity transform (rotation, uniform scale, shift) that takes the five landmarks (image pixels)
    closest to the template."""
    template = FFHQ_TEMPLATE_512 * (size / 512.0)
    matrix, _ = cv2.estimateAffinePartial2D(np.asarray(landmarks, dtype=np.float32), template, method=cv2.LMEDS)
    if matrix is None:
        raise ValueError("the landmarks do not define a transform (all in one place?)")
    return matrix


def crop_face(image: np.ndarray, matrix: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    return cv2.warpAffine(image, matrix, (size, size), borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER_GRAY)


def paste_face(image: np.ndarray, face: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """`face` (the restored crop) warped back into `image` through the inverse of `matrix`, feathered at its edge.
    Returns a new uint8 image; pixels outside the face's soft mask are the input's."""
    height, width = image.shape[:2]
    inverse = cv2.invertAffineTransform(matrix)
    back = cv2.warpAffine(face, inverse, (width, height))
    mask = cv2.warpAffine(np.ones(face.shape[:2], dtype=np.float32), inverse, (width, height))
    mask = cv2.erode(mask, np.ones((2, 2), np.uint8))           # drop the interpolated rim
    edge = int(float(mask.sum()) ** 0.5) // 20                  # feather width grows with the face
    if edge > 0:
        mask = cv2.erode(mask, np.ones((edge * 2, edge * 2), np.uint8))
        mask = cv2.GaussianBlur(mask, (edge * 2 + 1, edge * 2 + 1), 0)
    mask = mask[:, :, None]
    out = mask * back.astype(np.float32) + (1 - mask) * image.astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)
