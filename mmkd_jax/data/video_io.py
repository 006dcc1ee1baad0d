"""Decode a video file (webm/mp4/avi via PyAV, OpenCV as fallback) or a frame folder (no TF).

Returns uint8 RGB frames plus fps. For frame folders of JPEGs the original bytes come back too, so
builders can store them as given instead of re-encoding.
"""
import dataclasses
import os
import re

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
JPEG_SUFFIXES = (".jpg", ".jpeg")
# Something-Something frame dumps are 12 fps; a folder carries no rate of its own.
DEFAULT_FOLDER_FPS = 12.0


class VideoReadError(OSError):
    """A video or frame folder exists but cannot be decoded; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Video:
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB
    fps: float
    jpeg: list[bytes] | None = None  # original JPEG bytes per frame (frame folders only)
    # Seconds of video the container declares (header frame count / rate, else its duration)
    # and the seconds the decoded frames cover (last frame's time + one frame); None when
    # unknown. Far fewer decoded than declared seconds means a truncated or damaged file.
    # (Header frame counts alone mislead: AVI files may count dropped, empty frames.)
    declared_seconds: float | None = None
    decoded_seconds: float | None = None

    @property
    def truncated(self) -> bool:
        if not (self.declared_seconds and self.decoded_seconds and self.fps):
            return False
        slack = max(2.0 / self.fps, 0.02 * self.declared_seconds)
        return self.decoded_seconds < self.declared_seconds - slack

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


def read_video(path: str | os.PathLike, folder_fps: float = DEFAULT_FOLDER_FPS) -> Video:
    """Decodes `path` (a video file or a folder of frame images) into RGB frames."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"video not found: {path}")
    if os.path.isdir(path):
        return _read_folder(path, folder_fps)
    errors = []
    for name, reader in _FILE_READERS.items():
        try:
            frames, fps, seconds = reader(path)
        except Exception as e:  # any decoder failure means "try the next one"
            errors.append(f"{name}: {type(e).__name__}: {e}")
            continue
        if frames.shape[0] > 0:
            return Video(frames=frames, fps=fps, declared_seconds=seconds[0],
                         decoded_seconds=seconds[1])
        errors.append(f"{name}: no frames decoded")
    raise VideoReadError(f"cannot decode video {path} ({'; '.join(errors)})")


def _read_pyav(path: str) -> tuple[np.ndarray, float, tuple]:
    import av  # local: PyAV is only needed for video files

    frames = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        size, last_time = None, None
        for frame in container.decode(stream):
            last_time = frame.time if frame.time is not None else last_time
            if size is None:
                size = (frame.width, frame.height)
            elif (frame.width, frame.height) != size:
                # Rare mid-stream resolution changes: keep one size so frames stack.
                frame = frame.reformat(width=size[0], height=size[1])
            frames.append(frame.to_ndarray(format="rgb24"))
        fps = float(rate) if rate else 0.0
        # AVI and MP4 headers keep the frame count when the file is cut (the demuxer then
        # recomputes the duration); Matroska/webm carry only the duration (microseconds).
        declared = (stream.frames / fps if stream.frames and fps else
                    container.duration * 1e-6 if container.duration else None)
        decoded = last_time + 1.0 / fps if last_time is not None and fps else None
    return _stack(frames), fps, (declared, decoded)


def _read_opencv(path: str) -> tuple[np.ndarray, float, tuple]:
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise OSError("OpenCV could not open the file")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0
        frames, position = [], None
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            # This frame's time; the max, as some files report a reset position at the end.
            position = max(position or 0.0, cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    declared = count / fps if count > 0 and fps else None
    decoded = position + 1.0 / fps if position is not None and fps else None
    return _stack(frames), fps, (declared, decoded)


# Tried in order: PyAV decodes VP9 webm without an ffmpeg binary; OpenCV covers what it cannot.
_FILE_READERS = {"pyav": _read_pyav, "opencv": _read_opencv}


def _stack(frames: list[np.ndarray]) -> np.ndarray:
    if not frames:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.stack(frames).astype(np.uint8, copy=False)


def _natural_key(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def list_frame_files(folder: str) -> list[str]:
    """Image files in `folder`, in natural order (`2.jpg` before `10.jpg`)."""
    names = [n for n in os.listdir(folder) if n.lower().endswith(IMAGE_SUFFIXES)]
    return [os.path.join(folder, n) for n in sorted(names, key=_natural_key)]


def decode_image(data: bytes, path: str, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Encoded image bytes -> array (RGB for colour); raises VideoReadError naming `path`."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flags) if data else None
    if img is None:
        raise VideoReadError(f"cannot decode image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if img.ndim == 3 else img


def _read_folder(folder: str, fps: float) -> Video:
    files = list_frame_files(folder)
    if not files:
        raise VideoReadError(f"no frame images in folder {folder}")
    data = []
    for f in files:
        with open(f, "rb") as fh:
            data.append(fh.read())
    frames = [decode_image(d, f) for d, f in zip(data, files)]
    if len({fr.shape for fr in frames}) != 1:
        raise VideoReadError(f"frames of different sizes in folder {folder}")
    all_jpeg = all(f.lower().endswith(JPEG_SUFFIXES) for f in files)
    return Video(frames=_stack(frames), fps=float(fps), jpeg=data if all_jpeg else None)
