"""BAIR robot pushing (Ebert, Finn, Lee & Levine 2017, the ``softmotion30_44k`` TFRecords; docs/methods.md 11.3),
read without TensorFlow: TFRecord framing and CRC32C checks here, the ``tf.train.Example`` payload parsed with the
``tfrecord`` package's ``example_pb2`` (its own reader does not check the CRCs).

A file is a run of records, each uint64 length | uint32 masked CRC32C of the length bytes | payload | uint32
masked CRC32C of the payload, little-endian; masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 mod 2^32
(TensorFlow's ``python_io`` record format). Each payload is one sequence of 30 steps with, per step i, the
features ``'{i}/image_main/encoded'`` and ``'{i}/image_aux1/encoded'`` (raw uint8 RGB 64x64x3, row-major HWC,
12,288 bytes: not an encoded image despite the name), ``'{i}/action'`` (4 floats) and ``'{i}/endeffector_pos'``
(3 floats)."""
from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
from pydantic import Field, PositiveInt

from vaebench.data.common import DataIntegrityError, Prepared
from vaebench.data.sources import DatasetSource, register_source
from vaebench.registry import StrictConfig

N_STEPS = 30
IMAGE_HWC = (64, 64, 3)
CAMERAS = ("image_aux1", "image_main")
DEFAULT_CAMERA = "image_aux1"        # the camera svg-code (Denton & Fergus 2018) trains and evaluates on
MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC32C (Castagnoli) of ``data``: ((c >> 15) | (c << 17)) + 0xa282ead8 mod 2^32."""
    import crc32c

    c = crc32c.crc32c(data)
    return (((c >> 15) | (c << 17)) + MASK_DELTA) & 0xFFFFFFFF


def read_records(path: str | Path, data: bytes | None = None) -> Iterator[bytes]:
    """The payloads of the TFRecord file ``path`` (or of its bytes ``data``, already read), in order, each record's
    two CRCs checked. Raises DataIntegrityError naming the file, the record's index and its byte offset on a
    truncated record or a CRC mismatch; FileNotFoundError for a missing file."""
    path = Path(path)
    with (open(path, "rb") if data is None else io.BytesIO(data)) as f:
        index = 0
        while True:
            offset = f.tell()
            header = f.read(12)
            if not header:
                return
            where = f"{path}: record {index} (byte {offset})"
            if len(header) < 12:
                raise DataIntegrityError(f"{where}: truncated header ({len(header)} of 12 bytes)")
            length_bytes, length_crc = header[:8], struct.unpack("<I", header[8:])[0]
            if masked_crc32c(length_bytes) != length_crc:
                raise DataIntegrityError(f"{where}: the length's CRC does not match (not a TFRecord file, or "
                                         "damaged)")
            (length,) = struct.unpack("<Q", length_bytes)
            payload = f.read(length)
            footer = f.read(4)
            if len(payload) < length or len(footer) < 4:
                raise DataIntegrityError(f"{where}: truncated payload ({len(payload)} of {length} bytes)")
            if masked_crc32c(payload) != struct.unpack("<I", footer)[0]:
                raise DataIntegrityError(f"{where}: the payload's CRC does not match (damaged file)")
            yield payload
            index += 1


def parse_sequence(payload: bytes, camera: str = DEFAULT_CAMERA, n_steps: int = N_STEPS,
                   where: str = "<payload>") -> dict[str, np.ndarray]:
    """One serialized ``tf.train.Example`` -> {'frames': uint8 (n_steps, 3, 64, 64) of ``camera``, 'action'
    float32 (n_steps, 4), 'endeffector_pos' float32 (n_steps, 3)}. Raises ValueError for an unknown camera and
    DataIntegrityError naming ``where`` and the key for a payload that is not an Example, a missing feature or one
    of the wrong type or size."""
    from google.protobuf.message import DecodeError
    from tfrecord import example_pb2

    if camera not in CAMERAS:
        raise ValueError(f"camera must be one of {', '.join(CAMERAS)}, got {camera!r}")
    try:
        features = example_pb2.Example.FromString(payload).features.feature
    except DecodeError as exc:
        raise DataIntegrityError(f"{where}: not a tf.train.Example ({exc})") from None

    def get(key: str, kind: str):
        if key not in features:
            raise DataIntegrityError(f"{where}: feature {key!r} is missing")
        if features[key].WhichOneof("kind") != kind:
            raise DataIntegrityError(f"{where}: feature {key!r} is a {features[key].WhichOneof('kind')}, "
                                     f"expected a {kind}")
        return features[key]

    frames = np.empty((n_steps, IMAGE_HWC[2], *IMAGE_HWC[:2]), np.uint8)
    out = {"action": np.empty((n_steps, 4), np.float32), "endeffector_pos": np.empty((n_steps, 3), np.float32)}
    for i in range(n_steps):
        key = f"{i}/{camera}/encoded"
        values = get(key, "bytes_list").bytes_list.value
        if len(values) != 1 or len(values[0]) != int(np.prod(IMAGE_HWC)):
            raise DataIntegrityError(f"{where}: feature {key!r} holds {[len(v) for v in values]} bytes, expected "
                                     f"one raw {'x'.join(map(str, IMAGE_HWC))} uint8 image ({np.prod(IMAGE_HWC)})")
        frames[i] = np.frombuffer(values[0], np.uint8).reshape(IMAGE_HWC).transpose(2, 0, 1)
        for name, array in out.items():
            key = f"{i}/{name}"
            values = get(key, "float_list").float_list.value
            if len(values) != array.shape[1]:
                raise DataIntegrityError(f"{where}: feature {key!r} holds {len(values)} floats, expected "
                                         f"{array.shape[1]}")
            array[i] = values
    return {"frames": frames, **out}


def read_bair_file(path: str | Path, camera: str = DEFAULT_CAMERA, n_steps: int = N_STEPS,
                   data: bytes | None = None) -> dict[str, np.ndarray]:
    """Every sequence of one ``softmotion30_44k`` TFRecord file (or of its bytes ``data``, already read): 'frames'
    uint8 (N, n_steps, 3, 64, 64), 'action' float32 (N, n_steps, 4), 'endeffector_pos' float32 (N, n_steps, 3).
    Raises as ``read_records`` and ``parse_sequence`` (the record's index named)."""
    parsed = [parse_sequence(p, camera, n_steps, where=f"{path}: record {i}")
              for i, p in enumerate(read_records(path, data))]
    if not parsed:
        raise DataIntegrityError(f"{path}: no records")
    return {k: np.stack([s[k] for s in parsed]) for k in parsed[0]}


ARCHIVE_URL = "http://rail.eecs.berkeley.edu/datasets/bair_robot_pushing_dataset_v0.tar"
TRAIN_DIR, TEST_DIR = "softmotion30_44k/train", "softmotion30_44k/test"
TEST_FILE = f"{TEST_DIR}/traj_0_to_255.tfrecords"


class BairConfig(StrictConfig):
    """How the BAIR robot pushing sequences are cut and split: the camera, the frames kept per training and test
    sequence (svg-code: the first 12 for training, all 30 for testing) and the training sequences held out as
    validation."""

    camera: Literal["image_aux1", "image_main"] = Field(DEFAULT_CAMERA, description="The camera whose frames are "
                                                                                   "read (svg-code: image_aux1).")
    sequence_length: int = Field(12, ge=2, le=N_STEPS, description="The first N frames of every training and "
                                                                  "validation sequence (svg-code: n_past + n_future "
                                                                  "= 2 + 10).")
    test_sequence_length: int = Field(N_STEPS, ge=2, le=N_STEPS, description="The first N frames of every test "
                                                                            "sequence.")
    n_validation: PositiveInt = Field(256, description="The last N training sequences (in file order), held out as "
                                                       "validation.")
    max_train: PositiveInt | None = Field(None, description="Keep the first N training sequences (null = all).")
    max_test: PositiveInt | None = Field(None, description="Keep the first N test sequences (null = all 256).")


def _start_index(path: Path) -> int:
    """The first trajectory number of ``traj_<a>_to_<b>.tfrecords`` (files sort by it); ValueError otherwise."""
    stem = path.name.removesuffix(".tfrecords")
    parts = stem.split("_")
    if len(parts) != 4 or parts[0] != "traj" or parts[2] != "to" or not (parts[1].isdigit() and parts[3].isdigit()):
        raise ValueError(f"{path}: not a softmotion30_44k file name (traj_<a>_to_<b>.tfrecords)")
    return int(parts[1])


def _read_files(files: list[Path], camera: str, length: int, cap: int | None) -> tuple[np.ndarray, dict[str, str]]:
    """The first ``length`` frames of the sequences of ``files`` in order (at most ``cap``), and {file: SHA-256}."""
    import hashlib

    frames, sums, n = [], {}, 0
    for path in files:
        if cap is not None and n >= cap:
            break
        data = path.read_bytes()
        sums[path.name] = hashlib.sha256(data).hexdigest()
        part = read_bair_file(path, camera, data=data)["frames"][:, :length]
        frames.append(part)
        n += len(part)
    out = np.concatenate(frames)
    return (out if cap is None else out[:cap]), sums


def prepare_bair(source: DatasetSource, cfg: dict, folder: Path) -> Prepared:
    """Read the ``softmotion30_44k`` TFRecords under ``folder`` (every record's CRCs checked: the files have no
    published checksums): training files in order of their first trajectory, the last ``n_validation`` training
    sequences as validation, the test file as the test split. Frames uint8 (N, T, 3, 64, 64), labels -1.

    Raises:
        FileNotFoundError: the test file or every training file is missing. DataIntegrityError: a damaged record,
            a file name not of the official form, or no sequence left for training.
    """
    folder = Path(folder)
    if not (folder / TEST_FILE).is_file():
        raise FileNotFoundError(f"dataset file missing: expected {folder / TEST_FILE}")
    try:
        train_files = sorted((folder / TRAIN_DIR).glob("*.tfrecords"), key=_start_index)
    except ValueError as exc:
        raise DataIntegrityError(str(exc)) from None
    if not train_files:
        raise FileNotFoundError(f"dataset files missing: no training file {folder / TRAIN_DIR}/traj_*.tfrecords")
    n_val = cfg["n_validation"]
    cap = None if cfg["max_train"] is None else cfg["max_train"] + n_val
    train, sums = _read_files(train_files, cfg["camera"], cfg["sequence_length"], cap)
    if len(train) <= n_val:
        raise DataIntegrityError(f"{folder / TRAIN_DIR}: {len(train)} training sequences, not more than "
                                 f"n_validation = {n_val}")
    test, test_sums = _read_files([folder / TEST_FILE], cfg["camera"], cfg["test_sequence_length"], cfg["max_test"])
    sums.update(test_sums)
    splits = {"train": train[:-n_val], "val": train[-n_val:], "test": test}
    split_meta = {
        "description": (f"train: the sequences of {len(train_files)} training files in order of their first "
                        f"trajectory, the last {n_val} held out as validation (max_train keeps the first N of the "
                        f"rest); test: {TEST_FILE} (max_test keeps the first N); camera {cfg['camera']}; the first "
                        f"{cfg['sequence_length']} frames of a training or validation sequence, "
                        f"{cfg['test_sequence_length']} of a test sequence"),
        "train_files": [p.name for p in train_files[:len(sums) - 1]],
    }
    lengths = {"train": cfg["sequence_length"], "val": cfg["sequence_length"], "test": cfg["test_sequence_length"]}
    return Prepared({s: (x, np.full(len(x), -1, dtype=np.int64)) for s, x in splits.items()}, split_meta, sums,
                    more_meta={"sequence_lengths": lengths, "verification": "CRC32C of every record (the files "
                                                                            "have no published checksums)"})


def download_refusal(mirror_layout: str) -> str:
    """The DatasetDownloadError message without a mirror (``mirror_layout``: :func:`vaebench.data.mirror_layout`)."""
    return ("dataset 'bair' is not downloaded automatically: it is one 30 GB tar archive, "
            f"{ARCHIVE_URL} (svg-code data/download_bair.sh). Download it, unpack it (tar -xf) so that the "
            f"mirror holds softmotion30_44k/train/traj_*.tfrecords and softmotion30_44k/test/traj_0_to_255.tfrecords, "
            f"laid out as\n{mirror_layout}\n  <mirror>/bair/{TRAIN_DIR}/traj_<a>_to_<b>.tfrecords   (every "
            "training file)\nand pass --mirror <mirror> (or set VAEBENCH_DATA_MIRROR=<mirror>).")


SOURCE = register_source(DatasetSource(
    name="bair",
    config=BairConfig,
    reader=prepare_bair,
    citation=("BAIR robot pushing, softmotion30_44k (Ebert, Finn, Lee & Levine 2017, \"Self-Supervised Visual "
              f"Planning with Temporal Skip Connections\", CoRL); {ARCHIVE_URL}"),
    mirror_subdir="bair",
    files={"test": TEST_FILE},
    download_refusal=download_refusal,
    image_shape=(3, 64, 64),
    n_classes=None,
    sequence=True,
))
