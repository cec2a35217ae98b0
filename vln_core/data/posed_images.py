"""Read "posed image" folders: the ScanNet / 7-Scenes export layout.

One folder holds one sequence::

    frame-000000.color.png   (or .jpg)  RGB, 8 bit
    frame-000000.depth.png              uint16 millimetres; 0 and 65535 = no measurement (optional)
    frame-000000.pose.txt               4x4 camera-to-world T_wc, metres, OpenCV optical axes
    intrinsics.K.txt                    3x3 pinhole matrix (or one of the alternatives below)

Frame numbers may be zero-padded to any width (``frame-15`` and ``frame-000015`` are frame 15)
and need not be contiguous. Intrinsics are looked up in this order (first file found wins):

1. ``intrinsics.K.txt``: 3x3 matrix (a 4x4 homogeneous matrix is accepted, its top-left 3x3 used).
2. ``intrinsics.txt``: 9 numbers (3x3), 16 numbers (4x4), 4 numbers ``fx fy cx cy`` or 6 numbers
   ``fx fy cx cy width height`` (the only form that also gives the image size).
3. ``camera-intrinsics.txt`` (the name of TSDF-fusion's 7-Scenes exports): the same forms as
   ``intrinsics.txt``, usually 3x3.
4. ScanNet ``intrinsic/intrinsic_color.txt`` (4x4), else ``intrinsic/intrinsic_depth.txt``.
5. 7-Scenes default ``fx = fy = 585, cx = 320, cy = 240`` (640x480), only when the folder is
   recognisably a 7-Scenes sequence (named ``seq-NN`` inside ``chess``, ``fire``, ``heads``,
   ``office``, ``pumpkin``, ``redkitchen`` or ``stairs``, or under a folder whose name contains
   ``7scenes`` / ``7-scenes``). Any other folder without intrinsics is an error.

Depth and colour of different sizes: the depth map is resized to the colour grid with
nearest-neighbour interpolation (no invented depth values) and the colour ``K`` is used for both,
but only when they share a field of view. With separate colour and depth intrinsics (ScanNet)
both horizontal and vertical fields of view must agree within 1 degree; with one ``K`` only, the
aspect ratios must agree within 0.5 % (a resampled image of the same sensor). Anything else raises
:class:`~vln_core.errors.InputError`, because resizing would silently misregister depth and colour.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence

import cv2
import numpy as np

from vln_core.errors import InputError
from vln_core.geometry.camera import PinholeCamera
from vln_core.geometry.reproject import depth_from_uint16_mm
from vln_core.geometry.transforms import ROTATION_TOLERANCE, nearest_rotation, rotation_error

__all__ = [
    "FrameKind",
    "PosedSequence",
    "SEVEN_SCENES_K",
    "SEVEN_SCENES_SIZE",
    "check_pose",
    "frame_path",
    "list_frame_ids",
    "load_posed_sequence",
    "read_color",
    "read_depth",
    "read_intrinsics",
    "read_pose",
]

FrameKind = Literal["color", "depth", "pose"]

#: (3, 3) default 7-Scenes intrinsics (Kinect v1, 640x480), used only for recognised 7-Scenes folders.
SEVEN_SCENES_K = np.array([[585.0, 0.0, 320.0], [0.0, 585.0, 240.0], [0.0, 0.0, 1.0]], dtype=np.float64)
#: (H, W) of 7-Scenes images.
SEVEN_SCENES_SIZE = (480, 640)
_SEVEN_SCENES_NAMES = {"chess", "fire", "heads", "office", "pumpkin", "redkitchen", "stairs"}

_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "color": ("png", "jpg", "jpeg"),
    "depth": ("png",),
    "pose": ("txt",),
}
_COLOR_NAME = re.compile(r"^frame-(\d+)\.color\.(png|jpg|jpeg)$", re.IGNORECASE)
_ANY_FRAME_NAME = re.compile(r"^frame-(\d+)\.(color|depth|pose)\.([A-Za-z]+)$")

_FOV_TOLERANCE_DEG = 1.0
_ASPECT_TOLERANCE = 0.005


# ------------------------------------------------------------------------------- file names


def list_frame_ids(folder: str | os.PathLike) -> list[int]:
    """Frame numbers of the colour images ``frame-N.color.{png,jpg,jpeg}`` in ``folder``.

    Returns:
        Sorted numerically (``frame-9`` before ``frame-10``), each number once.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"posed-image folder {folder} does not exist or is not a directory")
    ids = set()
    for name in os.listdir(folder):
        match = _COLOR_NAME.match(name)
        if match:
            frame_id = int(match.group(1))
            if frame_id in ids:
                raise InputError(
                    f"{folder}: frame {frame_id} has more than one colour image (e.g. {name}); "
                    "remove the duplicate"
                )
            ids.add(frame_id)
    return sorted(ids)


def frame_path(folder: str | os.PathLike, frame_id: int, kind: FrameKind) -> Path:
    """The actual file of one frame: ``frame-<N>.<kind>.<ext>`` with any zero padding of ``N``.

    Args:
        folder: the posed-image folder.
        frame_id: the frame number.
        kind: ``"color"`` (png/jpg/jpeg), ``"depth"`` (png) or ``"pose"`` (txt).

    Raises:
        InputError: no such file (the message names the names tried).
    """
    if kind not in _EXTENSIONS:
        raise InputError(f"frame kind must be one of {sorted(_EXTENSIONS)}, got {kind!r}")
    folder = Path(folder)
    frame_id = int(frame_id)
    # the common paddings first (cheap stat calls); a directory scan only as the fallback
    for width in (6, 0, 5, 4, 3, 7, 8):
        for ext in _EXTENSIONS[kind]:
            candidate = folder / f"frame-{frame_id:0{width}d}.{kind}.{ext}"
            if candidate.is_file():
                return candidate
    if folder.is_dir():
        for name in sorted(os.listdir(folder)):
            match = _ANY_FRAME_NAME.match(name)
            if (
                match
                and int(match.group(1)) == frame_id
                and match.group(2) == kind
                and match.group(3).lower() in _EXTENSIONS[kind]
            ):
                return folder / name
    raise InputError(
        f"{folder}: no {kind} file for frame {frame_id} "
        f"(looked for frame-{frame_id:06d}.{kind}.{{{','.join(_EXTENSIONS[kind])}}} with any zero padding)"
    )


# ------------------------------------------------------------------------------- single files


def read_color(path: str | os.PathLike) -> np.ndarray:
    """Read a colour image.

    Returns:
        ``(H, W, 3)`` uint8 RGB (grey images are expanded to three equal channels; 16-bit images
        are rejected).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"colour image {path} does not exist")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise InputError(f"colour image {path} cannot be decoded (corrupt or unsupported format)")
    if raw.dtype != np.uint8:
        raise InputError(f"colour image {path} must be 8 bit per channel, got dtype {raw.dtype}")
    if raw.ndim == 2:
        return np.ascontiguousarray(np.repeat(raw[:, :, None], 3, axis=2))
    if raw.shape[2] == 4:
        return cv2.cvtColor(raw, cv2.COLOR_BGRA2RGB)
    if raw.shape[2] == 3:
        return cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)
    raise InputError(f"colour image {path} has {raw.shape[2]} channels; expected 1, 3 or 4")


def read_depth(path: str | os.PathLike) -> np.ndarray:
    """Read a 16-bit millimetre depth PNG.

    Returns:
        ``(H, W)`` float32 metres; pixels stored as 0 or 65535 (no measurement) are 0.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"depth image {path} does not exist")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise InputError(f"depth image {path} cannot be decoded (corrupt or unsupported format)")
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise InputError(
            f"depth image {path} must be a single-channel 16-bit PNG in millimetres, "
            f"got dtype {raw.dtype} with shape {raw.shape}"
        )
    return depth_from_uint16_mm(raw)


def check_pose(T: np.ndarray, what: str = "pose") -> np.ndarray:
    """Validate a rigid 4x4 transform.

    Args:
        T: array-like, must be ``(4, 4)``, finite, last row ``[0, 0, 0, 1]`` and an orthonormal
            rotation block with determinant +1 within the project's one tolerance
            (:data:`vln_core.geometry.transforms.ROTATION_TOLERANCE`, 1e-2).
        what: names the pose in error messages (e.g. a file name).

    Returns:
        ``(4, 4)`` float64 copy whose rotation block is re-orthonormalised (SVD): poses stored
        with 4-6 digits pass, and every consumer gets an exact rotation.
    """
    try:
        T = np.array(T, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what}: not a numeric 4x4 matrix ({exc})") from None
    if T.shape != (4, 4):
        raise InputError(f"{what}: pose must be a 4x4 matrix, got shape {T.shape}")
    if not np.isfinite(T).all():
        raise InputError(f"{what}: pose contains non-finite values (inf/nan marks an invalid pose)")
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        raise InputError(f"{what}: last row of a rigid pose must be [0, 0, 0, 1], got {T[3].tolist()}")
    R = T[:3, :3]
    error = rotation_error(R)
    if error > ROTATION_TOLERANCE:
        raise InputError(
            f"{what}: rotation block is not a proper rotation (error {error:.2e} = max(|R R^T - I|, |det R - 1|), "
            f"det = {np.linalg.det(R):.6f}; tolerance {ROTATION_TOLERANCE:g}); the file must hold a rigid "
            f"camera-to-world transform"
        )
    T[:3, :3] = nearest_rotation(R)  # poses stored with few digits: the rotation they stand for
    return T


def read_pose(path: str | os.PathLike) -> np.ndarray:
    """Read a ``frame-N.pose.txt`` file.

    Returns:
        ``(4, 4)`` float64 ``T_wc`` (camera-to-world, OpenCV optical axes, metres).

    Raises:
        InputError: missing file, not 16 numbers, non-finite values (ScanNet writes ``-inf`` for
            frames whose tracking failed) or not a rigid transform.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"pose file {path} does not exist")
    try:
        values = np.array(path.read_text().split(), dtype=np.float64)
    except ValueError as exc:
        raise InputError(f"pose file {path}: not a whitespace-separated list of numbers ({exc})") from None
    if values.size != 16:
        raise InputError(f"pose file {path} must hold a 4x4 matrix (16 numbers), found {values.size}")
    return check_pose(values.reshape(4, 4), what=f"pose file {path}")


# ------------------------------------------------------------------------------- intrinsics


def _read_numbers(path: Path) -> np.ndarray:
    try:
        return np.array(path.read_text().replace(",", " ").split(), dtype=np.float64)
    except ValueError as exc:
        raise InputError(f"intrinsics file {path}: not a list of numbers ({exc})") from None


def _K_from_numbers(values: np.ndarray, path: Path) -> tuple[np.ndarray, Optional[tuple[int, int]]]:
    size: Optional[tuple[int, int]] = None
    if values.size == 9:
        K = values.reshape(3, 3)
    elif values.size == 16:
        K = values.reshape(4, 4)[:3, :3]
    elif values.size == 4:
        fx, fy, cx, cy = values
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    elif values.size == 6:
        fx, fy, cx, cy, width, height = values
        if not (float(width).is_integer() and float(height).is_integer()):
            raise InputError(f"intrinsics file {path}: width/height must be integers, got {width}, {height}")
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        size = (int(height), int(width))
    else:
        raise InputError(
            f"intrinsics file {path} holds {values.size} numbers; expected 9 (3x3), 16 (4x4), "
            "4 (fx fy cx cy) or 6 (fx fy cx cy width height)"
        )
    _validate_K(K, str(path))
    return np.array(K, dtype=np.float64), size


def _validate_K(K: np.ndarray, what: str) -> None:
    if not np.isfinite(K).all():
        raise InputError(f"{what}: intrinsic matrix has non-finite entries")
    try:
        PinholeCamera.from_K(K, width=1, height=1)  # zero skew, last row [0, 0, 1], positive focal lengths
    except InputError as exc:
        raise InputError(f"{what}: {exc}") from None


def _is_seven_scenes(folder: Path) -> bool:
    folder = folder.resolve()
    if not re.fullmatch(r"seq-\d+", folder.name):
        return False
    if folder.parent.name.lower() in _SEVEN_SCENES_NAMES:
        return True
    return any(re.search(r"7-?scenes", p.name, re.IGNORECASE) for p in folder.parents)


def _intrinsics_candidates(folder: Path) -> list[Path]:
    return [
        folder / "intrinsics.K.txt",
        folder / "intrinsics.txt",
        folder / "camera-intrinsics.txt",  # TSDF-fusion 7-Scenes exports
        folder / "intrinsic" / "intrinsic_color.txt",
        folder / "intrinsic" / "intrinsic_depth.txt",
    ]


def read_intrinsics(folder: str | os.PathLike) -> tuple[np.ndarray, Optional[tuple[int, int]]]:
    """Intrinsics of the colour images of a posed-image folder (lookup order in the module doc).

    Returns:
        ``(K, size)``: ``K`` ``(3, 3)`` float64 pinhole matrix; ``size`` ``(H, W)`` when the file
        states it (6-number ``intrinsics.txt``, 7-Scenes default), else ``None`` (take it from
        the images).

    Raises:
        InputError: no intrinsics file and the folder is not recognisably 7-Scenes, or a file
            that is not a zero-skew pinhole matrix.
    """
    folder = Path(folder)
    for path in _intrinsics_candidates(folder):
        if path.is_file():
            return _K_from_numbers(_read_numbers(path), path)
    if _is_seven_scenes(folder):
        return SEVEN_SCENES_K.copy(), SEVEN_SCENES_SIZE
    raise InputError(
        f"{folder}: no intrinsics found; expected one of "
        + ", ".join(str(p.relative_to(folder)) for p in _intrinsics_candidates(folder))
        + " (the 7-Scenes default applies only to folders named seq-NN inside a 7-Scenes scene)"
    )


def _read_depth_intrinsics(folder: Path) -> Optional[np.ndarray]:
    """The depth camera's own K when the folder has one separate from colour (ScanNet), else None."""
    color_file = folder / "intrinsic" / "intrinsic_color.txt"
    depth_file = folder / "intrinsic" / "intrinsic_depth.txt"
    single = ("intrinsics.K.txt", "intrinsics.txt", "camera-intrinsics.txt")  # one K for both wins
    if depth_file.is_file() and color_file.is_file() and not any((folder / n).is_file() for n in single):
        return _K_from_numbers(_read_numbers(depth_file), depth_file)[0]
    return None


def _fov_deg(K: np.ndarray, height: int, width: int) -> tuple[float, float]:
    cam = PinholeCamera.from_K(K, width=width, height=height)
    return cam.hfov_deg, cam.vfov_deg


def _match_depth_to_color(
    depth: np.ndarray,
    color_size: tuple[int, int],
    K_color: np.ndarray,
    K_depth: Optional[np.ndarray],
    where: str,
) -> np.ndarray:
    """Resize ``(h, w)`` depth to ``color_size`` (nearest) after checking a shared field of view."""
    if depth.shape == tuple(color_size):
        return depth
    Hc, Wc = color_size
    Hd, Wd = depth.shape
    if K_depth is not None:
        fov_color = _fov_deg(K_color, Hc, Wc)
        fov_depth = _fov_deg(K_depth, Hd, Wd)
        if max(abs(a - b) for a, b in zip(fov_color, fov_depth)) > _FOV_TOLERANCE_DEG:
            raise InputError(
                f"{where}: depth {Wd}x{Hd} and colour {Wc}x{Hc} do not share a field of view "
                f"(h/v FOV colour {fov_color[0]:.1f}/{fov_color[1]:.1f} deg, depth "
                f"{fov_depth[0]:.1f}/{fov_depth[1]:.1f} deg); register depth to colour first"
            )
    elif abs((Wd / Hd) / (Wc / Hc) - 1.0) > _ASPECT_TOLERANCE:
        raise InputError(
            f"{where}: depth {Wd}x{Hd} and colour {Wc}x{Hc} differ in aspect ratio and the folder has "
            "one intrinsic matrix only, so they cannot share a field of view; register depth to colour first"
        )
    return cv2.resize(depth, (Wc, Hc), interpolation=cv2.INTER_NEAREST)


# ------------------------------------------------------------------------------- sequences


@dataclass
class PosedSequence:
    """Frames of one posed sequence, loaded into memory.

    Attributes:
        colors: ``(N, H, W, 3)`` uint8 RGB.
        depths: ``(N, H, W)`` float32 metres (0 = invalid) on the colour grid, or ``None`` when
            the sequence has no depth.
        poses: ``(N, 4, 4)`` float64 ``T_wc`` camera-to-world, OpenCV optical axes.
        K: ``(3, 3)`` float64 intrinsics of the colour grid.
        frame_ids: the N frame numbers (file numbers, not positions).
        folder: where the frames came from.
    """

    colors: np.ndarray
    depths: Optional[np.ndarray]
    poses: np.ndarray
    K: np.ndarray
    frame_ids: list[int]
    folder: Path

    def __len__(self) -> int:
        return len(self.frame_ids)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the colour images."""
        return (int(self.colors.shape[1]), int(self.colors.shape[2]))


def select_frame_ids(
    frame_ids: list[int], stride: int = 1, max_frames: Optional[int] = None, start: int = 0
) -> list[int]:
    """``frame_ids[start::stride][:max_frames]`` with argument checks (``start`` is a position)."""
    if stride < 1:
        raise InputError(f"stride must be >= 1, got {stride}")
    if start < 0:
        raise InputError(f"start must be >= 0 (a position in the sorted frame list), got {start}")
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames must be >= 1 or None, got {max_frames}")
    chosen = list(frame_ids)[start::stride]
    return chosen[:max_frames] if max_frames is not None else chosen


def load_posed_sequence(
    folder: str | os.PathLike,
    stride: int = 1,
    max_frames: Optional[int] = None,
    start: int = 0,
    skip_invalid_poses: bool = False,
    frame_ids: Optional[Sequence[int]] = None,
) -> PosedSequence:
    """Load a posed-image folder into memory.

    Args:
        folder: the folder (layout in the module doc).
        stride: keep every ``stride``-th frame of the sorted frame list.
        max_frames: keep at most this many frames (after ``start`` and ``stride``).
        start: position (not frame number) in the sorted frame list of the first frame kept.
        skip_invalid_poses: drop frames whose pose file is non-finite or not rigid (ScanNet marks
            lost tracking with ``-inf``) instead of raising.
        frame_ids: load only these frame numbers (sorted, each once; ``start`` / ``stride`` /
            ``max_frames`` then apply to them); no other frame's files are read.

    Returns:
        :class:`PosedSequence`. Depth is loaded when every selected frame has a depth file,
        omitted (``None``) when none has; a partial set raises. Depth of another size than colour
        is resized as described in the module doc.
    """
    folder = Path(folder)
    all_ids = list_frame_ids(folder)
    if not all_ids:
        raise InputError(f"{folder}: no colour frames (frame-N.color.png/jpg) found")
    if frame_ids is not None:
        wanted = sorted({int(f) for f in frame_ids})
        present = set(all_ids)
        missing = [f for f in wanted if f not in present]
        if missing or not wanted:
            raise InputError(f"{folder}: frames {missing or '[]'} not found (have {all_ids[0]}..{all_ids[-1]})")
        all_ids = wanted
    ids = select_frame_ids(all_ids, stride, max_frames, start)
    if not ids:
        raise InputError(f"{folder}: start={start} is past the last of {len(all_ids)} frames")
    K, stated_size = read_intrinsics(folder)
    K_depth = _read_depth_intrinsics(folder)

    poses, kept = [], []
    for frame_id in ids:
        try:
            poses.append(read_pose(frame_path(folder, frame_id, "pose")))
            kept.append(frame_id)
        except InputError:
            if not skip_invalid_poses:
                raise
    if not kept:
        raise InputError(f"{folder}: every selected frame has an invalid pose")

    depth_files = []
    for frame_id in kept:
        try:
            depth_files.append(frame_path(folder, frame_id, "depth"))
        except InputError:
            depth_files.append(None)
    have_depth = [p is not None for p in depth_files]
    if any(have_depth) and not all(have_depth):
        missing = [fid for fid, has in zip(kept, have_depth) if not has]
        raise InputError(f"{folder}: depth images exist for some frames but not for frames {missing[:10]}")

    colors = []
    for frame_id in kept:
        color = read_color(frame_path(folder, frame_id, "color"))
        if colors and color.shape != colors[0].shape:
            raise InputError(
                f"{folder}: frame {frame_id} colour is {color.shape[1]}x{color.shape[0]}, "
                f"frame {kept[0]} is {colors[0].shape[1]}x{colors[0].shape[0]}; one size per sequence"
            )
        colors.append(color)
    color_size = colors[0].shape[:2]
    if stated_size is not None and tuple(stated_size) != tuple(color_size):
        raise InputError(
            f"{folder}: intrinsics are for {stated_size[1]}x{stated_size[0]} images but the colour "
            f"images are {color_size[1]}x{color_size[0]}"
        )

    depths = None
    if all(have_depth):
        depths = np.stack(
            [
                _match_depth_to_color(read_depth(p), color_size, K, K_depth, str(p))
                for p in depth_files
            ]
        )
    return PosedSequence(
        colors=np.stack(colors),
        depths=depths,
        poses=np.stack(poses),
        K=K,
        frame_ids=kept,
        folder=folder,
    )
