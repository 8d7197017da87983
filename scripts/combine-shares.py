#!/usr/bin/python3
"""Combines Shamir shares of an ephemera volume key (escrow threshold > 1).

usage: combine-shares.py SHARE-FILE SHARE-FILE [...] > /run/vk.bin

Each SHARE-FILE is what one recipient's private key decrypts from its
`ciphertext` in the envelope (docs/ESCROW.md): one byte, the share's x
(1 to 255), then one byte per key byte. The key is the value at x = 0 of the
polynomials through the shares, byte by byte, in GF(2^8) with the reducing
polynomial 0x11d, as the `blahaj` crate that split it computes it. Give at
least `threshold` shares (fewer give a wrong key, which cryptsetup refuses).
Standard library only; the key goes to stdout and nowhere else.
"""
import sys

EXP = [0] * 510
LOG = [0] * 256
x = 1
for i in range(255):
    EXP[i] = EXP[i + 255] = x
    LOG[x] = i
    x <<= 1
    if x & 0x100:
        x ^= 0x11D


def mul(a, b):
    return 0 if a == 0 or b == 0 else EXP[LOG[a] + LOG[b]]


def div(a, b):
    return 0 if a == 0 else EXP[(LOG[a] - LOG[b]) % 255]


def main(paths):
    if len(paths) < 2:
        sys.exit("combine-shares: give at least two share files (the threshold)")
    shares = []
    for p in paths:
        with open(p, "rb") as f:
            s = f.read()
        if len(s) < 2 or s[0] == 0:
            sys.exit(f"combine-shares: {p} is not a share (its first byte, x, must be 1 to 255)")
        shares.append(s)
    if len({len(s) for s in shares}) != 1:
        sys.exit("combine-shares: the shares differ in length: not of one key")
    if len({s[0] for s in shares}) != len(shares):
        sys.exit("combine-shares: two files hold the same share")
    key = bytearray()
    for k in range(1, len(shares[0])):
        acc = 0
        for i in shares:
            term = i[k]
            for j in shares:
                if j[0] != i[0]:
                    term = mul(term, div(j[0], j[0] ^ i[0]))
            acc ^= term
        key.append(acc)
    sys.stdout.buffer.write(bytes(key))


if __name__ == "__main__":
    main(sys.argv[1:])
