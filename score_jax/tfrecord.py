"""TFRecord files of `tf.train.Example` protos, read without TensorFlow (FFHQ / CelebA-HQ of the reference).

The framing is uint64 length, masked CRC-32C of the length, payload, masked CRC-32C of the payload;
the payload is a serialised protobuf, decoded here field by field.
"""

import functools
import glob
import os
import struct

import numpy as np


@functools.cache
def _crc32c_table():
  table = []
  for n in range(256):
    for _ in range(8):
      n = (n >> 1) ^ 0x82F63B78 if n & 1 else n >> 1
    table.append(n)
  return table


def crc32c(data):
  """CRC-32C (Castagnoli polynomial), bytewise."""
  table, crc = _crc32c_table(), 0xFFFFFFFF
  for byte in data:
    crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
  """The TFRecord checksum: CRC-32C rotated right by 15 bits plus a constant."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(buffer, pos):
  result = shift = 0
  while True:
    byte = buffer[pos]
    result |= (byte & 0x7F) << shift
    pos, shift = pos + 1, shift + 7
    if byte < 0x80:
      return result, pos


def _proto_fields(buffer):
  """`(field number, wire type, value)` of a serialised protobuf message; values are ints or bytes."""
  pos = 0
  while pos < len(buffer):
    key, pos = _varint(buffer, pos)
    wire = key & 7
    if wire == 0:
      value, pos = _varint(buffer, pos)
    elif wire == 2:
      length, pos = _varint(buffer, pos)
      value, pos = buffer[pos:pos + length], pos + length
    elif wire in (1, 5):
      width = 8 if wire == 1 else 4
      value, pos = buffer[pos:pos + width], pos + width
    else:
      raise ValueError(f"unsupported protobuf wire type {wire}")
    yield key >> 3, wire, value


def parse_example(serialized):
  """A serialised `tf.train.Example` -> `{name: list of bytes | int | float}`."""
  features = {}
  for number, _, message in _proto_fields(memoryview(serialized)):
    if number != 1:  # Example.features
      continue
    for _, _, entry in _proto_fields(message):  # Features.feature: map<string, Feature> entries
      fields = {n: v for n, _, v in _proto_fields(entry)}
      features[bytes(fields.get(1, b"")).decode()] = _feature_values(fields.get(2, b""))
  return features


def _feature_values(feature):
  for kind, _, values in _proto_fields(feature):  # Feature: 1 bytes_list, 2 float_list, 3 int64_list
    out = []
    for _, wire, value in _proto_fields(values):
      if kind == 1:
        out.append(bytes(value))
      elif kind == 2:
        out.extend(np.frombuffer(value, "<f4").tolist())
      elif wire == 2:  # packed int64s
        pos = 0
        while pos < len(value):
          number, pos = _varint(value, pos)
          out.append(number - (1 << 64) if number >= 1 << 63 else number)
      else:
        out.append(value - (1 << 64) if value >= 1 << 63 else value)
    return out
  return []


class TFRecordImages:
  """Random access to TFRecords whose Examples hold `shape` (int64[3]) and `data` (uint8 bytes in CHW order).

  The framing (uint64 length, masked CRC-32C of the length, payload, masked CRC-32C of the
  payload) is indexed once on construction. Length checksums are verified; payload checksums
  are not (pure-Python CRC of megabytes per image would dominate the read).
  """

  def __init__(self, pattern):
    self.paths = sorted(glob.glob(os.path.expanduser(pattern)))
    if not self.paths:
      raise FileNotFoundError(f"no TFRecord file matches data.tfrecords_path={pattern!r}")
    self.records = [(f, offset, length) for f, path in enumerate(self.paths) for offset, length in _scan(path)]
    if not self.records:
      raise ValueError(f"{pattern!r} holds no records")

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    f, offset, length = self.records[i]
    with open(self.paths[f], "rb") as file:
      file.seek(offset)
      features = parse_example(file.read(length))
    if "shape" not in features or "data" not in features:
      raise ValueError(f"record {i} of {self.paths[f]} lacks the features 'shape' and 'data': {sorted(features)}")
    return np.frombuffer(features["data"][0], np.uint8).reshape(features["shape"]).transpose(1, 2, 0)


def _scan(path):
  """`(payload offset, payload length)` of every record of one TFRecord file."""
  size, offset = os.path.getsize(path), 0
  with open(path, "rb") as file:
    while offset < size:
      file.seek(offset)
      header = file.read(12)
      length, length_crc = struct.unpack("<QI", header) if len(header) == 12 else (0, None)
      if length_crc != masked_crc32c(header[:8]):
        raise ValueError(f"{path} is not a TFRecord file (bad record header at byte {offset})")
      if offset + 16 + length > size:
        raise ValueError(f"{path} is truncated (the record at byte {offset} runs past the end)")
      yield offset + 12, length
      offset += 16 + length
