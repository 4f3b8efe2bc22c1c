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

import struct
from pathlib import Path
from typing import Iterator

import numpy as np

from vaebench.data.common import DataIntegrityError

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


def read_records(path: str | Path) -> Iterator[bytes]:
    """The payloads of the TFRecord file ``path``, in order, each record's two CRCs checked. Raises
    DataIntegrityError naming the file, the record's index and its byte offset on a truncated record or a CRC
    mismatch; FileNotFoundError for a missing file."""
    path = Path(path)
    with open(path, "rb") as f:
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


def read_bair_file(path: str | Path, camera: str = DEFAULT_CAMERA, n_steps: int = N_STEPS) -> dict[str, np.ndarray]:
    """Every sequence of one ``softmotion30_44k`` TFRecord file: 'frames' uint8 (N, n_steps, 3, 64, 64),
    'action' float32 (N, n_steps, 4), 'endeffector_pos' float32 (N, n_steps, 3). Raises as ``read_records`` and
    ``parse_sequence`` (the record's index named)."""
    parsed = [parse_sequence(p, camera, n_steps, where=f"{path}: record {i}")
              for i, p in enumerate(read_records(path))]
    if not parsed:
        raise DataIntegrityError(f"{path}: no records")
    return {k: np.stack([s[k] for s in parsed]) for k in parsed[0]}
