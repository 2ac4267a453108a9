"""Identities of models and reward checkpoints: what keys `reneg eval`'s saved images and scores."""

import os

import reneg.identity as identity
from reneg.identity import file_digest, path_identity, reference_identity


def test_a_directory_identity_follows_its_files(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "weights.safetensors").write_bytes(b"\0" * 100)
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "lock").write_text("x")
    first = path_identity(tmp_path)
    assert first.startswith("sha256:") and path_identity(tmp_path) == first
    (tmp_path / ".cache" / "lock").write_text("y")  # hidden files are not the model
    assert path_identity(tmp_path) == first
    (tmp_path / "unet" / "weights.safetensors").write_bytes(b"\1" + b"\0" * 99)  # same size, new content
    assert path_identity(tmp_path) != first
    assert reference_identity(str(tmp_path)) == f"{tmp_path.resolve()}@{path_identity(tmp_path)}"
    assert reference_identity(None) == "none"
    assert reference_identity("org/not-in-the-cache") == "unresolved:org/not-in-the-cache"


def test_a_large_file_is_keyed_by_size_mtime_and_its_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(identity, "FULL_HASH_LIMIT", 1024)
    monkeypatch.setattr(identity, "EDGE_BYTES", 256)
    monkeypatch.setattr(identity, "_DIGESTS", {})
    path = tmp_path / "unet.safetensors"
    data = bytearray(os.urandom(4096))
    path.write_bytes(data)
    stamp = path.stat().st_mtime_ns
    first = file_digest(path)
    assert first.startswith("edges:")
    data[2000] ^= 0xFF  # the middle changes, size and mtime kept: not seen (the documented trade-off)
    path.write_bytes(data)
    os.utime(path, ns=(stamp, stamp))
    assert file_digest(path) == first
    os.utime(path, ns=(stamp + 1, stamp + 1))  # rewritten in place: a new mtime
    assert file_digest(path) != first
    data[-1] ^= 0xFF  # the tail changes (in a fresh process: within one, unchanged size and mtime reuse the digest)
    path.write_bytes(data)
    os.utime(path, ns=(stamp, stamp))
    identity._DIGESTS.clear()
    assert file_digest(path) != first


def test_a_hub_cache_symlink_is_keyed_by_its_blob_name(tmp_path):
    blob = tmp_path / "blobs" / ("a" * 64)
    blob.parent.mkdir()
    blob.write_bytes(b"weights")
    link = tmp_path / "snapshots" / "rev" / "model.safetensors"
    link.parent.mkdir(parents=True)
    link.symlink_to(blob)
    assert file_digest(link) == "blob:" + "a" * 64
