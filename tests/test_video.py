"""Video decode/encode (sama_jax.data.video) and fitting clips to the model grid
(sama_jax.data.frames): the real clips in ../shared/testdata/videos, and clips made here
with PyAV in the codecs, pixel formats and orientations real data arrives in."""

import os
import shutil
import subprocess
import wave

import av
import numpy as np
import pytest
from av.codec.codec import UnknownCodecError

from conftest import REPO
from sama_jax.data import frames as F
from sama_jax.data import video
from sama_jax.data.video import VideoError, read_video, write_video

VIDEOS = os.path.join(REPO, "..", "shared", "testdata", "videos")
# (file, width, height, frames, fps) from VIDEOS/README.md.
REAL_CLIPS = [
    ("add-02-source.mp4", 896, 448, 49, 24.0),
    ("highlight-07-source.mp4", 832, 480, 37, 20.0),
    ("highlight-09-source.mp4", 832, 480, 49, 24.0),
]
# Lossy codecs at their default quality reach 33-43 dB on these smooth clips; decoding
# with the wrong colour matrix, range or channel order lands far below 30 dB.
LOSSY_PSNR_DB = 30.0


def real_clip(name: str) -> str:
  path = os.path.join(VIDEOS, name)
  if not os.path.exists(path):
    pytest.skip(f"real test clip {os.path.normpath(path)} is absent: the shared "
                "testdata/videos folder must sit beside the repository")
  return path


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def smooth_clip(frames: int = 9, height: int = 48, width: int = 64) -> np.ndarray:
  """Moving colour gradients [T, H, W, 3] uint8: smooth, so codecs keep them well."""
  yy, xx = np.mgrid[0:height, 0:width]
  return np.stack([np.stack([xx * 3 + t, yy * 4 + t, (xx + yy) * 2], -1) for t in range(frames)]
                  ).clip(0, 255).astype(np.uint8)


def quadrants(height: int = 32, width: int = 64) -> np.ndarray:
  """Gray [H, W, 3] with four different quadrants, so every rotation or flip of it differs
  (and gray has no chroma for 4:2:0 to blur)."""
  image = np.empty((height, width), np.uint8)
  image[:height // 2, :width // 2], image[:height // 2, width // 2:] = 250, 170
  image[height // 2:, :width // 2], image[height // 2:, width // 2:] = 90, 10
  return np.repeat(image[..., None], 3, -1)


def require_encoder(codec: str, pix_fmt: str) -> None:
  try:
    formats = {f.name for f in av.codec.Codec(codec, "w").video_formats or ()}
  except UnknownCodecError:
    pytest.skip(f"PyAV's bundled FFmpeg has no {codec} encoder")
  if pix_fmt not in formats:
    pytest.skip(f"PyAV's {codec} encoder does not take pix_fmt {pix_fmt}")


def encode(path, frames, codec="libx264", pix_fmt="yuv420p", rate=10, input_format="rgb24",
           rotation=None, metadata=None):
  """Writes `frames` with PyAV directly, for inputs write_video would never produce.
  rotation: (degrees counter-clockwise, hflip, vflip) stored as a display matrix."""
  require_encoder(codec, pix_fmt)
  if rotation is not None and not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
    return add_rotation_with_ffmpeg(encode(path, frames, codec, pix_fmt, rate, input_format), rotation)
  with av.open(str(path), "w") as container:
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
    if rotation is not None:
      stream.set_display_rotation(rotation[0], hflip=rotation[1], vflip=rotation[2])
    stream.metadata.update(metadata or {})
    for image in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=input_format)))
    container.mux(stream.encode())
  return str(path)


def add_rotation_with_ffmpeg(path: str, rotation) -> str:
  """For a PyAV that cannot write a display matrix: let an ffmpeg binary (>= 6, which has
  -display_rotation) add one without re-encoding."""
  ffmpeg = shutil.which("ffmpeg")
  if ffmpeg is None:
    pytest.skip("this PyAV has no VideoStream.set_display_rotation and no ffmpeg binary is on "
                "PATH, so no rotated test video can be made")
  degrees, hflip, vflip = rotation
  stem, ext = os.path.splitext(path)
  rotated = f"{stem}_rotated{ext}"
  command = [ffmpeg, "-v", "error", "-y", "-display_rotation", str(degrees)]
  command += (["-display_hflip"] if hflip else []) + (["-display_vflip"] if vflip else [])
  subprocess.run(command + ["-i", path, "-c", "copy", rotated], check=True)
  return rotated


def decoded_pixel_format(path) -> str:
  with av.open(str(path)) as container:
    return next(container.decode(video=0)).format.name


# ---------------------------------------------------------------------------------------
# The real clips.


@pytest.mark.parametrize("name,width,height,count,fps", REAL_CLIPS)
def test_real_clips_decode_to_their_documented_size_length_and_rate(name, width, height, count, fps):
  frames, got_fps = read_video(real_clip(name))
  assert frames.shape == (count, height, width, 3) and frames.dtype == np.uint8
  assert got_fps == pytest.approx(fps)
  assert frames.std() > 10 and not np.array_equal(frames[0], frames[-1])  # real, moving content


def test_max_frames_reads_the_first_frames():
  path = real_clip("highlight-07-source.mp4")
  full, _ = read_video(path)
  head, _ = read_video(path, max_frames=10)
  np.testing.assert_array_equal(head, full[:10])
  assert read_video(path, max_frames=500)[0].shape[0] == 37


@pytest.mark.parametrize("name,width,height,count,fps", REAL_CLIPS)
def test_real_clips_fall_in_their_own_bucket_and_already_have_4k_plus_1_frames(name, width, height, count, fps):
  frames, _ = read_video(real_clip(name))
  assert F.closest_bucket(width, height, F.resolution_buckets()) == (width, height)
  np.testing.assert_array_equal(F.center_crop_resize(frames, (width, height)), frames)
  assert F.to_4k_plus_1(frames, "pad") is frames and F.to_4k_plus_1(frames, "truncate").shape[0] == count


def test_real_clip_resized_into_another_bucket():
  frames, _ = read_video(real_clip("add-02-source.mp4"), max_frames=3)  # 896x448 (2:1)
  for resize in (F.center_crop_resize, F.crop_and_resize):
    out = resize(frames, (832, 480))
    assert out.shape == (3, 480, 832, 3) and out.dtype == np.uint8
    assert abs(float(out.mean()) - float(frames.mean())) < 5  # same content, not a blank frame


def test_real_clip_cut_to_40_frames_pads_to_41_or_truncates_to_37():
  frames, _ = read_video(real_clip("highlight-09-source.mp4"), max_frames=40)
  padded = F.to_4k_plus_1(frames, "pad")
  assert padded.shape[0] == 41 and np.array_equal(padded[40], frames[39])
  np.testing.assert_array_equal(F.to_4k_plus_1(frames, "truncate"), frames[:37])


# ---------------------------------------------------------------------------------------
# Buckets and resizing.


def test_bucket_list_is_the_fifteen_of_the_method_notes():
  assert F.resolution_buckets(480 * 832, factor=32, min_ar=0.5, max_ar=2.0) == [
      (896, 448), (832, 480), (768, 512), (736, 544), (704, 576), (672, 608), (640, 640),
      (608, 672), (576, 704), (544, 736), (512, 768), (512, 800), (480, 832), (448, 864),
      (448, 896)]


@pytest.mark.parametrize("size,bucket", [((1920, 1080), (832, 480)), ((1080, 1920), (480, 832)),
                                         ((1024, 1024), (640, 640)), ((640, 480), (736, 544))])
def test_bucket_examples_table(size, bucket):
  assert F.closest_bucket(*size, F.resolution_buckets()) == bucket


def test_closest_bucket_first_of_equally_near_wins():
  assert F.closest_bucket(5, 4, [(4, 4), (6, 4)]) == (4, 4)  # 1.25 is 0.25 from both
  assert F.closest_bucket(5, 4, [(6, 4), (4, 4)]) == (6, 4)


def test_center_crop_resize_keeps_the_centre_then_resizes_bicubic():
  frames = np.random.default_rng(0).integers(0, 256, (2, 10, 40, 3), dtype=np.uint8)
  np.testing.assert_array_equal(F.center_crop_resize(frames, (10, 10)), frames[:, :, 15:25])
  from PIL import Image
  out = F.center_crop_resize(frames, (20, 20))
  expected = np.asarray(Image.fromarray(frames[1, :, 15:25]).resize((20, 20), Image.Resampling.BICUBIC))
  np.testing.assert_array_equal(out[1], expected)


def test_crop_and_resize_scales_to_cover_then_centre_crops():
  frames = np.random.default_rng(1).integers(0, 256, (1, 48, 64, 3), dtype=np.uint8)
  from PIL import Image
  # scale = max(32/64, 32/48) = 2/3 -> 43x32 (round(42.67)); left = round(5.5) = 6 (half to even).
  resized = np.asarray(Image.fromarray(frames[0]).resize((43, 32), Image.Resampling.BILINEAR))
  np.testing.assert_array_equal(F.crop_and_resize(frames, (32, 32))[0], resized[:, 6:38])


@pytest.mark.parametrize("count,padded,truncated", [(1, 1, 1), (2, 5, 1), (4, 5, 1), (5, 5, 5),
                                                    (6, 9, 5), (49, 49, 49), (81, 81, 81), (82, 85, 81)])
def test_4k_plus_1_padding_repeats_the_last_frame_and_truncation_keeps_a_prefix(count, padded, truncated):
  frames = np.arange(count, dtype=np.uint8)[:, None, None, None].repeat(3, -1)
  out = F.to_4k_plus_1(frames, "pad")
  assert out.shape[0] == padded and np.all(out[count:] == count - 1)
  np.testing.assert_array_equal(out[:count], frames)
  np.testing.assert_array_equal(F.to_4k_plus_1(frames, "truncate"), frames[:truncated])


def test_too_few_frames_or_a_bad_mode_is_a_clear_error():
  frames = np.zeros((3, 4, 4, 3), np.uint8)
  with pytest.raises(ValueError, match=r"video has 3 frames; SAMA needs at least 5 \(4k\+1\)"):
    F.to_4k_plus_1(frames, "truncate", min_frames=5)
  with pytest.raises(ValueError, match="'pad' or 'truncate'"):
    F.to_4k_plus_1(frames, "repeat")


@pytest.mark.parametrize("bad", [np.zeros((2, 4, 4, 3), np.float32), np.zeros((2, 4, 4), np.uint8),
                                 np.zeros((2, 4, 4, 4), np.uint8), [[[[0, 0, 0]]]]])
def test_frames_that_are_not_uint8_rgb_are_rejected_with_their_shape(bad):
  with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
    F.center_crop_resize(bad, (4, 4))


# ---------------------------------------------------------------------------------------
# Writing, and reading back what was written.


def test_write_then_read_round_trip(tmp_path):
  clip = smooth_clip()
  path = str(tmp_path / "clip.mp4")
  write_video(path, clip, 12)
  frames, fps = read_video(path)
  assert frames.shape == clip.shape and fps == 12.0
  assert psnr(frames, clip) > 35.0  # crf 18 on smooth gradients measures ~44 dB
  assert os.listdir(tmp_path) == ["clip.mp4"]  # no temporary file left behind


def test_write_keeps_an_ntsc_frame_rate(tmp_path):
  path = str(tmp_path / "ntsc.mp4")
  write_video(path, smooth_clip(3), 30000 / 1001)
  assert read_video(path)[1] == pytest.approx(30000 / 1001, rel=1e-9)


def test_write_replaces_an_existing_file(tmp_path):
  path = str(tmp_path / "clip.mp4")
  write_video(path, np.zeros((2, 16, 16, 3), np.uint8), 10)
  write_video(path, np.full((3, 16, 16, 3), 200, np.uint8), 10)
  frames, _ = read_video(path)
  assert frames.shape[0] == 3 and abs(float(frames.mean()) - 200) < 3


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
  path = str(tmp_path / "clip.mp4")
  write_video(path, np.zeros((2, 16, 16, 3), np.uint8), 10)
  before = open(path, "rb").read()

  def refuse(*args):
    raise OSError("disk full")

  monkeypatch.setattr(video.os, "replace", refuse)
  with pytest.raises(OSError, match="disk full"):
    write_video(path, smooth_clip(), 10)
  monkeypatch.undo()
  assert open(path, "rb").read() == before and os.listdir(tmp_path) == ["clip.mp4"]


def test_write_rejects_odd_sizes_bad_frames_bad_fps_and_missing_folders(tmp_path):
  path = str(tmp_path / "clip.mp4")
  with pytest.raises(ValueError, match=r"frames are 33x16 \(WxH\); H.264 yuv420p needs an even"):
    write_video(path, np.zeros((2, 16, 33, 3), np.uint8), 10)
  with pytest.raises(ValueError, match=r"uint8 array \[T, H, W, 3\]"):
    write_video(path, np.zeros((2, 16, 16, 3), np.float32), 10)
  with pytest.raises(ValueError, match="fps=0"):
    write_video(path, np.zeros((2, 16, 16, 3), np.uint8), 0)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    write_video(str(tmp_path / "no" / "clip.mp4"), np.zeros((2, 16, 16, 3), np.uint8), 10)
  assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------
# Frame-rate resampling: frame i of a 10 fps clip is a flat gray of level 10·i + 5.


@pytest.fixture
def numbered_clip(tmp_path):
  frames = np.repeat((10 * np.arange(20) + 5).astype(np.uint8), 16 * 16 * 3).reshape(20, 16, 16, 3)
  path = str(tmp_path / "numbered.mp4")
  write_video(path, frames, 10)
  return path


def frame_numbers(frames: np.ndarray) -> list[int]:
  return [int(round((float(f.mean()) - 5) / 10)) for f in frames]


@pytest.mark.parametrize("fps", [5.0, 20.0, 7.5, 10.0])
def test_resampling_picks_the_nearest_source_frame(numbered_clip, fps):
  frames, got_fps = read_video(numbered_clip, fps=fps)
  count = int(2.0 * fps)  # the clip lasts 20 frames / 10 fps = 2 s
  source_times, target_times = np.arange(20) / 10, np.arange(count) / fps
  nearest = [int(np.argmin(np.abs(source_times - t) + 1e-9 * np.arange(20))) for t in target_times]
  assert got_fps == fps and frame_numbers(frames) == nearest
  if fps == 5.0:
    assert nearest == list(range(0, 20, 2))
  if fps == 20.0:
    assert nearest == [i // 2 for i in range(40)]  # each frame shown twice, earlier on ties


def test_resampling_then_max_frames_keeps_the_first_output_frames(numbered_clip):
  assert frame_numbers(read_video(numbered_clip, fps=5, max_frames=3)[0]) == [0, 2, 4]
  assert frame_numbers(read_video(numbered_clip, fps=20, max_frames=5)[0]) == [0, 0, 1, 1, 2]
  assert frame_numbers(read_video(numbered_clip, fps=5, max_frames=50)[0]) == list(range(0, 20, 2))


def test_bad_read_arguments_are_clear_errors(numbered_clip):
  with pytest.raises(ValueError, match="max_frames=0"):
    read_video(numbered_clip, max_frames=0)
  with pytest.raises(ValueError, match="fps=-1"):
    read_video(numbered_clip, fps=-1)


# ---------------------------------------------------------------------------------------
# Orientation metadata.

ROTATIONS = {  # (degrees counter-clockwise, hflip, vflip) -> what an upright decode shows
    "ccw90": ((90, False, False), lambda x: np.rot90(x, 1)),
    "cw90": ((-90, False, False), lambda x: np.rot90(x, -1)),
    "180": ((180, False, False), lambda x: np.rot90(x, 2)),
    "hflip": ((0, True, False), lambda x: x[:, ::-1]),
    "vflip": ((0, False, True), lambda x: x[::-1]),
    "ccw90_hflip": ((90, True, False), lambda x: np.rot90(x, 1)[:, ::-1]),
}


@pytest.mark.parametrize("name", list(ROTATIONS))
def test_display_matrix_is_applied_so_frames_come_out_upright(tmp_path, name):
  rotation, upright = ROTATIONS[name]
  image = quadrants()
  path = encode(tmp_path / "rotated.mp4", np.stack([image] * 3), rotation=rotation)
  frames, _ = read_video(path)
  expected = upright(image)
  assert frames.shape == (3,) + expected.shape
  assert np.abs(frames[0].astype(int) - expected).mean() < 3  # only H.264 edge ringing differs


def test_legacy_rotate_tag_is_applied_clockwise(tmp_path):
  image = quadrants()
  path = encode(tmp_path / "tagged.mkv", np.stack([image] * 3), metadata={"rotate": "90"})
  with av.open(path) as container:
    if "rotate" not in {k.lower() for k in container.streams.video[0].metadata}:
      pytest.skip("this FFmpeg's Matroska muxer does not keep a `rotate` stream tag")
  frames, _ = read_video(path)
  assert np.abs(frames[0].astype(int) - np.rot90(image, -1)).mean() < 3


# ---------------------------------------------------------------------------------------
# Containers, codecs and pixel formats: whatever arrives comes out as RGB24.

CODECS = [  # (extension, encoder, stored pixel format)
    ("mp4", "libx264", "yuv420p"),
    ("mkv", "libx264", "yuv444p"),
    ("mp4", "libx264", "yuv420p10le"),
    ("mkv", "ffv1", "yuv420p10le"),
    ("mkv", "ffv1", "gray"),
    ("mkv", "ffv1", "gray16le"),
    ("mov", "png", "rgb24"),
    ("mov", "png", "gray"),
    ("avi", "mjpeg", "yuvj420p"),
    ("webm", "libvpx-vp9", "yuv420p"),
]


@pytest.mark.parametrize("ext,codec,pix_fmt", CODECS, ids=["-".join(c) for c in CODECS])
def test_decodes_common_codecs_and_pixel_formats_to_rgb(tmp_path, ext, codec, pix_fmt):
  clip = smooth_clip()
  gray = pix_fmt.startswith("gray")
  source = clip[..., 1] if gray else clip
  path = encode(tmp_path / f"clip.{ext}", source, codec, pix_fmt, input_format="gray" if gray else "rgb24")
  assert decoded_pixel_format(path) == pix_fmt  # the conversion under test really happens
  frames, fps = read_video(path)
  assert frames.shape == clip.shape and frames.dtype == np.uint8 and fps == 10.0
  expected = np.repeat(source[..., None], 3, -1) if gray else clip
  if gray:
    assert np.array_equal(frames[..., 0], frames[..., 1]) and np.array_equal(frames[..., 1], frames[..., 2])
  assert psnr(frames, expected) > LOSSY_PSNR_DB


# ---------------------------------------------------------------------------------------
# Files that give no video.


def test_missing_file(tmp_path):
  with pytest.raises(VideoError, match="does not exist") as info:
    read_video(str(tmp_path / "nothing.mp4"))
  assert info.value.path.endswith("nothing.mp4") and isinstance(info.value, ValueError)


def test_zero_byte_file(tmp_path):
  path = tmp_path / "empty.mp4"
  path.write_bytes(b"")
  with pytest.raises(VideoError, match=r"empty \(0 bytes\)"):
    read_video(str(path))


def test_directory(tmp_path):
  with pytest.raises(VideoError, match="is a directory"):
    read_video(str(tmp_path))


@pytest.mark.parametrize("content", [np.random.default_rng(0).bytes(5000), b"just some text\n" * 50],
                         ids=["random_bytes", "text"])
def test_file_that_is_not_media(tmp_path, content):
  path = tmp_path / "fake.mp4"
  path.write_bytes(content)
  with pytest.raises(VideoError, match="FFmpeg cannot open it"):
    read_video(str(path))


def test_truncated_mp4_without_its_index(tmp_path):
  # The real clips keep the MP4 index (moov) at the end, as most cameras write it, so a
  # partial download cannot be opened at all.
  data = open(real_clip("add-02-source.mp4"), "rb").read()
  path = tmp_path / "partial.mp4"
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(VideoError, match="FFmpeg cannot open it"):
    read_video(str(path))


def test_corrupt_payload_fails_while_decoding(tmp_path):
  rng = np.random.default_rng(0)
  clip = (smooth_clip(30, 96, 128).astype(int) + rng.integers(0, 40, (30, 96, 128, 3))).clip(0, 255)
  path = str(tmp_path / "clip.mp4")
  write_video(path, clip.astype(np.uint8), 10)  # index first (faststart), then the frames
  data = bytearray(open(path, "rb").read())
  third = len(data) // 3
  data[third:2 * third] = rng.bytes(third)
  open(path, "wb").write(bytes(data))
  with pytest.raises(VideoError, match="decoding failed after"):
    read_video(path)


def test_audio_only_file_has_no_video_stream(tmp_path):
  path = str(tmp_path / "tone.wav")
  with wave.open(path, "wb") as out:
    out.setnchannels(1), out.setsampwidth(2), out.setframerate(8000)
    out.writeframes(np.zeros(800, np.int16).tobytes())
  with pytest.raises(VideoError, match=r"has no video stream \(streams: audio\)"):
    read_video(path)
