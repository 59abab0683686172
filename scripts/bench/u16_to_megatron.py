#!/usr/bin/env python3
"""Wraps a raw little-endian uint16 token file as a one-document Megatron indexed dataset
(PREFIX.bin + PREFIX.idx), so that `tessera train --set data.train=PREFIX --set data.shuffle=false`
reads sample j = tokens[j*seq_len : (j+1)*seq_len + 1], the windows the Python reference reads.
Usage: u16_to_megatron.py TOKENS.u16 PREFIX"""
import os
import shutil
import struct
import sys

src, prefix = sys.argv[1], sys.argv[2]
n = os.path.getsize(src) // 2
shutil.copyfile(src, prefix + ".bin.tmp")
with open(prefix + ".idx.tmp", "wb") as f:
    # magic, version 1, dtype code 8 (uint16), 1 sequence, 2 document indices
    f.write(b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + struct.pack("<B", 8))
    f.write(struct.pack("<Q", 1) + struct.pack("<Q", 2))
    f.write(struct.pack("<i", n) + struct.pack("<q", 0) + struct.pack("<qq", 0, 1))
os.replace(prefix + ".bin.tmp", prefix + ".bin")
os.replace(prefix + ".idx.tmp", prefix + ".idx")
