"""The BAIR robot pushing reader (``vaebench.data.bair``) on small files written here in exactly the official format:
TFRecord framing with masked CRC32C (a bitwise CRC32C written here, checked on its test vectors), tf.train.Example
payloads encoded by hand in the protobuf wire format (packed and unpacked floats) with the feature keys of the
real softmotion30_44k files; damaged files are refused naming the record."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from vaebench.data.bair import masked_crc32c, parse_sequence, read_bair_file, read_records
from vaebench.data.common import DataIntegrityError


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        table.append(c)
    return table


CRC_TABLE = _crc_table()


def crc32c_bitwise(data: bytes) -> int:
    """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), a byte at a time from the bitwise table."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = (crc >> 8) ^ CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFFFFFF


def masked(data: bytes) -> int:
    c = crc32c_bitwise(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def feature_bytes(value: bytes) -> bytes:
    return field(1, field(1, value))                               # Feature.bytes_list{value}


def feature_floats(values, packed: bool) -> bytes:
    if packed:
        body = field(1, struct.pack(f"<{len(values)}f", *values))
    else:                                                           # one fixed32 (wire type 5) per value
        body = b"".join(varint(1 << 3 | 5) + struct.pack("<f", v) for v in values)
    return field(2, body)                                           # Feature.float_list


def example(features: dict[str, bytes]) -> bytes:
    """tf.train.Example{features: Features{feature: map<string, Feature>}}, map entries key = 1, value = 2."""
    entries = b"".join(field(1, field(1, k.encode()) + field(2, v)) for k, v in features.items())
    return field(1, entries)


def bair_sequence(rng, n_steps=30, packed=True, drop=None) -> tuple[bytes, dict]:
    truth = {"aux1": rng.integers(0, 256, (n_steps, 64, 64, 3), dtype=np.uint8),
             "main": rng.integers(0, 256, (n_steps, 64, 64, 3), dtype=np.uint8),
             "action": rng.normal(size=(n_steps, 4)).astype(np.float32),
             "endeffector_pos": rng.normal(size=(n_steps, 3)).astype(np.float32)}
    feats = {}
    for i in range(n_steps):
        feats[f"{i}/image_main/encoded"] = feature_bytes(truth["main"][i].tobytes())
        feats[f"{i}/image_aux1/encoded"] = feature_bytes(truth["aux1"][i].tobytes())
        feats[f"{i}/action"] = feature_floats(truth["action"][i].tolist(), packed)
        feats[f"{i}/endeffector_pos"] = feature_floats(truth["endeffector_pos"][i].tolist(), packed)
    feats.pop(drop, None)
    return example(feats), truth


def tfrecord(payloads: list[bytes]) -> bytes:
    out = b""
    for p in payloads:
        length = struct.pack("<Q", len(p))
        out += length + struct.pack("<I", masked(length)) + p + struct.pack("<I", masked(p))
    return out


def test_crc_vectors():
    assert crc32c_bitwise(b"123456789") == 0xE3069283
    assert masked(b"") == 0xA282EAD8
    for data in (b"", b"123456789", bytes(range(256)) * 3):
        assert masked_crc32c(data) == masked(data)


def test_reads_official_format_files_with_both_float_encodings(tmp_path):
    rng = np.random.default_rng(0)
    seqs = [bair_sequence(rng, packed=p) for p in (True, False)]
    path = tmp_path / "traj_0_to_1.tfrecords"
    path.write_bytes(tfrecord([s[0] for s in seqs]))
    assert [len(p) for p in read_records(path)] == [len(s[0]) for s in seqs]
    data = read_bair_file(path)
    assert data["frames"].shape == (2, 30, 3, 64, 64) and data["frames"].dtype == np.uint8
    for i, (_, truth) in enumerate(seqs):
        assert np.array_equal(data["frames"][i], truth["aux1"].transpose(0, 3, 1, 2))    # HWC -> CHW
        assert np.array_equal(data["action"][i], truth["action"])
        assert np.array_equal(data["endeffector_pos"][i], truth["endeffector_pos"])
    main = read_bair_file(path, camera="image_main")
    assert np.array_equal(main["frames"][1], seqs[1][1]["main"].transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match="camera must be one of"):
        read_bair_file(path, camera="image_aux2")


def test_damaged_files_are_refused_naming_the_record(tmp_path):
    rng = np.random.default_rng(1)
    good = [bair_sequence(rng, n_steps=2)[0] for _ in range(2)]
    raw = tfrecord(good)
    cases = {"truncated payload": raw[:-10],
             "the payload's CRC": raw[:40] + bytes([raw[40] ^ 1]) + raw[41:],
             "the length's CRC": raw[:9] + bytes([raw[9] ^ 1]) + raw[10:],
             "truncated header": raw + b"\x01\x02"}
    for message, data in cases.items():
        path = tmp_path / "bad.tfrecords"
        path.write_bytes(data)
        with pytest.raises(DataIntegrityError, match=f"bad.tfrecords: record \\d .*{message}"):
            read_bair_file(path, n_steps=2)
    # a record's payload damaged consistently (CRCs recomputed) is refused by the parser, naming the record
    missing, _ = bair_sequence(rng, n_steps=2, drop="1/action")
    path = tmp_path / "missing.tfrecords"
    path.write_bytes(tfrecord([good[0], missing]))
    with pytest.raises(DataIntegrityError, match="missing.tfrecords: record 1: feature '1/action' is missing"):
        read_bair_file(path, n_steps=2)
    with pytest.raises(DataIntegrityError, match="'0/image_aux1/encoded' holds \\[5\\] bytes"):
        parse_sequence(example({"0/image_aux1/encoded": feature_bytes(b"12345")}), n_steps=1)
    with pytest.raises(DataIntegrityError, match="is a float_list, expected a bytes_list"):
        parse_sequence(example({"0/image_aux1/encoded": feature_floats([1.0], True)}), n_steps=1)
    with pytest.raises(DataIntegrityError, match="not a tf.train.Example"):
        parse_sequence(b"\xff\xff\xff", n_steps=1)
    (tmp_path / "empty.tfrecords").write_bytes(b"")
    with pytest.raises(DataIntegrityError, match="no records"):
        read_bair_file(tmp_path / "empty.tfrecords")


def write_mirror(root, n_train_files=3, per_file=2, n_test=3, seed=2):
    """A mirror folder ``root``/bair in the layout of the unpacked official archive: training files
    traj_<a>_to_<b>.tfrecords of ``per_file`` sequences each (written out of order), one test file; returns
    {'train': [truth dicts in trajectory order], 'test': [...]}."""
    rng = np.random.default_rng(seed)
    folder = root / "bair" / "softmotion30_44k"
    (folder / "train").mkdir(parents=True)
    (folder / "test").mkdir()
    truths = {"train": [], "test": []}
    for f in range(n_train_files):
        seqs = [bair_sequence(rng) for _ in range(per_file)]
        truths["train"] += [t for _, t in seqs]
        a = f * per_file
        (folder / "train" / f"traj_{a}_to_{a + per_file - 1}.tfrecords").write_bytes(tfrecord([p for p, _ in seqs]))
    seqs = [bair_sequence(rng) for _ in range(n_test)]
    truths["test"] = [t for _, t in seqs]
    (folder / "test" / "traj_0_to_255.tfrecords").write_bytes(tfrecord([p for p, _ in seqs]))
    return truths


def test_bair_is_a_dataset_source_of_videos(tmp_path):
    """Prepared from an official-layout mirror: training files in trajectory order (traj_10_to_11 after
    traj_4_to_5), the last n_validation training sequences as validation, the first sequence_length frames of the
    aux1 camera, the test file whole; a damaged record or a missing test file stops it naming the file."""
    from vaebench.data import prepare_dataset
    from vaebench.data.common import MirrorError
    from vaebench.data.prepared import load_prepared

    truths = write_mirror(tmp_path, n_train_files=6)
    out = tmp_path / "bair.npz"
    summary = prepare_dataset("bair", {"n_validation": 3, "sequence_length": 12}, out, mirror=tmp_path)
    assert summary["counts"] == {"train": 9, "val": 3, "test": 3}
    data = load_prepared(out)
    assert data["x_train"].shape == (9, 12, 3, 64, 64) and data["x_test"].shape == (3, 30, 3, 64, 64)
    expect = [t["aux1"].transpose(0, 3, 1, 2) for t in truths["train"]]
    assert all(np.array_equal(data["x_train"][i], expect[i][:12]) for i in range(9))
    assert all(np.array_equal(data["x_val"][i], expect[9 + i][:12]) for i in range(3))
    assert np.array_equal(data["x_test"][2], truths["test"][2]["aux1"].transpose(0, 3, 1, 2))
    assert data["meta"]["sequence"] is True and len(data["meta"]["sha256"]) == 7
    capped = prepare_dataset("bair", {"n_validation": 1, "max_train": 2, "max_test": 1}, tmp_path / "c.npz",
                             mirror=tmp_path)
    assert capped["counts"] == {"train": 2, "val": 1, "test": 1}
    damaged = tmp_path / "bair/softmotion30_44k/train/traj_2_to_3.tfrecords"
    raw = bytearray(damaged.read_bytes())
    raw[100] ^= 1
    damaged.write_bytes(bytes(raw))
    with pytest.raises(DataIntegrityError, match="traj_2_to_3.tfrecords: record 0 .* CRC does not match"):
        prepare_dataset("bair", {"n_validation": 3}, tmp_path / "d.npz", mirror=tmp_path)
    (tmp_path / "bair/softmotion30_44k/test/traj_0_to_255.tfrecords").unlink()
    with pytest.raises(MirrorError, match="softmotion30_44k/test/traj_0_to_255.tfrecords"):
        prepare_dataset("bair", {"n_validation": 3}, tmp_path / "e.npz", mirror=tmp_path)
    assert not (tmp_path / "d.npz").exists() and not (tmp_path / "e.npz").exists()
