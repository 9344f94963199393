"""An independent reader of TensorBoard event files for tests/tensorboard/test_export.py: the
TFRecord framing with every crc checked (a bitwise crc32c, not the exporter's table) and a
generic protobuf decoder for Event { wall_time = 1, step = 2, file_version = 3, summary = 5,
session_log = 7 }, Summary { value = 1 }, Summary.Value { tag = 1, simple_value = 2 },
SessionLog { status = 1 }."""
import struct


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def unmasked(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot << 15) | (rot >> 17)) & 0xFFFFFFFF


def records(path):
    """The data of every record; raises ValueError on a bad crc or a cut record."""
    with open(path, "rb") as f:
        buf = f.read()
    pos, out = 0, []
    while pos < len(buf):
        if pos + 12 > len(buf):
            raise ValueError(f"{path}: record header cut at byte {pos}")
        header = buf[pos:pos + 8]
        (n,) = struct.unpack("<Q", header)
        (hcrc,) = struct.unpack("<I", buf[pos + 8:pos + 12])
        if unmasked(hcrc) != crc32c(header):
            raise ValueError(f"{path}: bad length crc at byte {pos}")
        data = buf[pos + 12:pos + 12 + n]
        if len(data) != n or pos + 16 + n > len(buf):
            raise ValueError(f"{path}: record cut at byte {pos}")
        (dcrc,) = struct.unpack("<I", buf[pos + 12 + n:pos + 16 + n])
        if unmasked(dcrc) != crc32c(data):
            raise ValueError(f"{path}: bad data crc at byte {pos}")
        out.append(data)
        pos += 16 + n
    return out


def fields(msg: bytes):
    """(field number, wire type, value) of a protobuf message; value: int for varints, bytes
    for fixed64 / fixed32 / length-delimited."""
    pos, out = 0, []

    def varint():
        nonlocal pos
        shift = result = 0
        while True:
            b = msg[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result

    while pos < len(msg):
        key = varint()
        num, wire = key >> 3, key & 7
        if wire == 0:
            out.append((num, wire, varint()))
        elif wire == 1:
            out.append((num, wire, msg[pos:pos + 8]))
            pos += 8
        elif wire == 5:
            out.append((num, wire, msg[pos:pos + 4]))
            pos += 4
        elif wire == 2:
            n = varint()
            out.append((num, wire, msg[pos:pos + n]))
            pos += n
        else:
            raise ValueError(f"wire type {wire} not expected")
    return out


def events(path):
    """Every event as a dict: wall_time, step, file_version (or None), values [(tag, float)],
    session_status (SessionLog.status, or None)."""
    out = []
    for data in records(path):
        ev = {"wall_time": None, "step": 0, "file_version": None, "values": [], "session_status": None}
        for num, wire, val in fields(data):
            if num == 1 and wire == 1:
                ev["wall_time"] = struct.unpack("<d", val)[0]
            elif num == 2 and wire == 0:
                ev["step"] = val - (1 << 64) if val >= 1 << 63 else val
            elif num == 3 and wire == 2:
                ev["file_version"] = val.decode()
            elif num == 5 and wire == 2:
                for snum, swire, sval in fields(val):
                    if snum != 1 or swire != 2:
                        raise ValueError(f"Summary field {snum} not expected")
                    tag, value = None, None
                    for vnum, vwire, vval in fields(sval):
                        if vnum == 1 and vwire == 2:
                            tag = vval.decode()
                        elif vnum == 2 and vwire == 5:
                            value = struct.unpack("<f", vval)[0]
                    ev["values"].append((tag, value))
            elif num == 7 and wire == 2:
                ev["session_status"] = dict((n, v) for n, w, v in fields(val) if w == 0).get(1, 0)
            else:
                raise ValueError(f"Event field {num} (wire {wire}) not expected")
        out.append(ev)
    return out


def scalars(path, purge=False):
    """tag -> list of (step, value), in file order; purge: as TensorBoard shows them (a
    SessionLog START at step s drops every earlier-written point with step >= s)."""
    out = {}
    for ev in events(path):
        if purge and ev["session_status"] == 1:
            out = {t: [(s, v) for s, v in pts if s < ev["step"]] for t, pts in out.items()}
        for tag, value in ev["values"]:
            out.setdefault(tag, []).append((ev["step"], value))
    return out
