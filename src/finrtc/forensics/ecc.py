"""Error control for the forensic watermark payload: CRC-16 plus a K=7 convolutional code.

The 32-bit ID gets a CRC-16 (so a decoder that locks onto noise can almost never produce a
plausible ID) and is then protected by the standard rate-1/2, constraint-length-7 code
(generators 171/133 octal, free distance 10) decoded with a soft-decision Viterbi decoder. At a
raw bit error rate of a few percent the decoded 48 bits are exact.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

PAYLOAD_BITS = 32
CRC_BITS = 16
INFO_BITS = PAYLOAD_BITS + CRC_BITS
CONSTRAINT = 7
_MEMORY = CONSTRAINT - 1
_STATES = 1 << _MEMORY
_GENERATORS = (0o171, 0o133)
CODED_BITS = (INFO_BITS + _MEMORY) * len(_GENERATORS)

_CRC_POLY = 0x1021
_CRC_INIT = 0xFFFF


def crc16(value: int, bits: int = PAYLOAD_BITS) -> int:
    """CRC-16/CCITT-FALSE over the `bits` most significant-first bits of `value`."""
    crc = _CRC_INIT
    for shift in range(bits - 1, -1, -1):
        bit = (value >> shift) & 1
        top = (crc >> 15) & 1
        crc = (crc << 1) & 0xFFFF
        if top ^ bit:
            crc ^= _CRC_POLY
    return crc


def _parity(value: int) -> int:
    return bin(value).count("1") & 1


def _to_bits(value: int, width: int) -> list[int]:
    return [(value >> shift) & 1 for shift in range(width - 1, -1, -1)]


def _branch_outputs() -> NDArray[np.int8]:
    """outputs[reg, k] for the 7-bit register `reg` (input bit in bit 6), as +1/-1."""
    table = np.empty((1 << CONSTRAINT, len(_GENERATORS)), dtype=np.int8)
    for reg in range(1 << CONSTRAINT):
        for k, generator in enumerate(_GENERATORS):
            table[reg, k] = 1 if _parity(reg & generator) else -1
    return table


_OUTPUTS = _branch_outputs()
_NEXT = np.arange(_STATES)
# Each next state `ns` has two predecessors; the input bit that led there is ns's top bit.
_REG0 = (_NEXT << 1) & ((1 << CONSTRAINT) - 1)
_REG1 = _REG0 | 1
_PREV0 = _REG0 & (_STATES - 1)
_PREV1 = _REG1 & (_STATES - 1)


def encode_payload(payload: int) -> NDArray[np.int8]:
    """The 32-bit `payload` as CODED_BITS channel symbols in {-1, +1} (+1 means bit 1)."""
    if not 0 <= payload < (1 << PAYLOAD_BITS):
        raise ValueError(f"watermark payload must fit in {PAYLOAD_BITS} bits, got {payload}")
    info = (payload << CRC_BITS) | crc16(payload)
    bits = _to_bits(info, INFO_BITS) + [0] * _MEMORY
    state = 0
    symbols = np.empty(CODED_BITS, dtype=np.int8)
    for step, bit in enumerate(bits):
        reg = (bit << _MEMORY) | state
        symbols[2 * step : 2 * step + 2] = _OUTPUTS[reg]
        state = reg >> 1
    return symbols


def viterbi_decode(soft: NDArray[np.floating]) -> int:
    """Most likely 48 information bits for soft symbols (positive = bit 1), as an int."""
    if soft.shape != (CODED_BITS,):
        raise ValueError(f"expected {CODED_BITS} soft symbols, got shape {soft.shape}")
    steps = CODED_BITS // 2
    pairs = np.asarray(soft, dtype=np.float64).reshape(steps, 2)
    metric = np.full(_STATES, -np.inf)
    metric[0] = 0.0
    decisions = np.empty((steps, _STATES), dtype=bool)
    # The register that ends in next state ns is (ns << 1 | lsb); its top bit is the input.
    out0 = _OUTPUTS[_REG0].astype(np.float64)
    out1 = _OUTPUTS[_REG1].astype(np.float64)
    for step in range(steps):
        received = pairs[step]
        cand0 = metric[_PREV0] + out0 @ received
        cand1 = metric[_PREV1] + out1 @ received
        choose1 = cand1 > cand0
        decisions[step] = choose1
        metric = np.where(choose1, cand1, cand0)
    state = 0  # the tail bits drive the encoder back to state 0
    bits = []
    for step in range(steps - 1, -1, -1):
        bits.append(state >> (_MEMORY - 1))
        state = int(_PREV1[state] if decisions[step, state] else _PREV0[state])
    bits.reverse()
    value = 0
    for bit in bits[:INFO_BITS]:
        value = (value << 1) | bit
    return value


def split_info(info: int) -> tuple[int, bool]:
    """(payload, crc_ok) for decoded information bits."""
    payload = info >> CRC_BITS
    return payload, crc16(payload) == (info & 0xFFFF)
