"""mmkd_jax.data.video_io on webm, avi, frame folders and broken input."""
import os

import cv2
import numpy as np
import pytest
from fixtures_ssv2 import footage, read_frames, write_webm

from mmkd_jax.data import video_io


def test_avi_real_footage():
    video = video_io.read_video(footage("tree.avi"))
    assert video.frames.shape == (68, 240, 320, 3) and video.frames.dtype == np.uint8
    assert video.fps == pytest.approx(15.0, abs=0.01)
    assert video.jpeg is None
    assert 40 < video.frames.mean() < 220  # real content, not a blank decode


def test_webm_vp9_round_trip(tmp_path):
    src = read_frames(footage("tree.avi"), 0, 12)
    path = str(tmp_path / "clip.webm")
    write_webm(path, src, fps=12)
    video = video_io.read_video(path)
    assert video.frames.shape == (12, 240, 320, 3)
    assert video.fps == 12.0
    assert np.abs(video.frames.astype(int) - src).mean() < 8  # lossy VP9, same content


def test_opencv_fallback_when_pyav_fails(monkeypatch):
    def broken(path):
        raise OSError("pretend PyAV cannot read this")

    monkeypatch.setitem(video_io._FILE_READERS, "pyav", broken)
    video = video_io.read_video(footage("tree.avi"))
    assert video.frames.shape == (68, 240, 320, 3)
    assert video.fps == pytest.approx(15.0, abs=0.01)


def test_frame_folder_keeps_jpeg_bytes_and_natural_order(tmp_path):
    frames = read_frames(footage("tree.avi"), 0, 11)
    for i, f in enumerate(frames, 1):  # 1.jpg .. 11.jpg: "10" must sort after "9"
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    video = video_io.read_video(tmp_path, folder_fps=12.0)
    assert video.frames.shape == (11, 240, 320, 3) and video.fps == 12.0
    assert video.jpeg == [(tmp_path / f"{i}.jpg").read_bytes() for i in range(1, 12)]
    assert np.abs(video.frames.astype(int) - frames).mean() < 4


def test_png_folder_has_no_jpeg_bytes(tmp_path):
    img = np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3)
    for i, f in enumerate(img):
        cv2.imwrite(str(tmp_path / f"frame_{i:03d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    video = video_io.read_video(tmp_path)
    np.testing.assert_array_equal(video.frames, img)  # PNG is lossless
    assert video.jpeg is None and video.fps == video_io.DEFAULT_FOLDER_FPS


def test_corrupt_file_names_the_file(tmp_path):
    path = tmp_path / "bad.webm"
    path.write_bytes(b"\x1a\x45\xdf\xa3" + os.urandom(2000))
    with pytest.raises(video_io.VideoReadError, match=str(path)):
        video_io.read_video(path)


def test_missing_file_and_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.webm"):
        video_io.read_video(tmp_path / "nope.webm")
    (tmp_path / "empty").mkdir()
    with pytest.raises(video_io.VideoReadError, match="empty"):
        video_io.read_video(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "1.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(video_io.VideoReadError, match="1.jpg"):
        video_io.read_video(tmp_path / "broken")
