"""Decode SBc-AP PDUs with pycrate compiled from the TS 29.168 V15.1.0 ASN.1 beside this file.

usage: python decode.py HEX [HEX ...]
Prints one JSON object per PDU: the procedure code, every IE (id, criticality, type name, value hex for octet
strings), and whether pycrate's own APER encoding of the decoded value gives back the same octets.
"""
import glob
import importlib.util
import json
import os
import sys
import tempfile

from pycrate_asn1c.asnproc import PycrateGenerator, compile_text, generate_modules

here = os.path.dirname(os.path.abspath(__file__))
compile_text([open(f, encoding="utf-8").read() for f in sorted(glob.glob(os.path.join(here, "*.asn")))])
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "sbcap.py")
    generate_modules(PycrateGenerator, path)
    spec = importlib.util.spec_from_file_location("sbcap", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

PDU = mod.SBC_AP_PDU_Descriptions.SBC_AP_PDU


def plain(v):
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], int) and isinstance(v[1], int):
        return {"bits": v[0], "len": v[1]}
    if isinstance(v, tuple):
        return [plain(x) for x in v]
    if isinstance(v, list):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    return v


for h in sys.argv[1:]:
    raw = bytes.fromhex(h)
    PDU.from_aper(raw)
    kind, msg = PDU.get_val()
    name, body = msg["value"]
    ies = [
        {"id": ie["id"], "criticality": ie["criticality"], "type": ie["value"][0], "value": plain(ie["value"][1])}
        for ie in body["protocolIEs"]
    ]
    print(json.dumps({"kind": kind, "procedure": msg["procedureCode"], "message": name, "ies": ies,
                      "reencodes": PDU.to_aper() == raw}))
