#!/usr/bin/env python3
"""Seeds fuzz/corpus/wusp from the captured Windows client requests
(../shared/reference/wsus-captures/wsus-m0-native): one input per request,
in the `wusp` target's form (first byte: the operation's index in the
target's OPS; then the request element's content, its cookies replaced by
the `$C` / `$A` markers the target fills in). The corpus is not committed."""
import glob, os, re, sys

OPS = ["GetConfig", "GetCookie", "RegisterComputer", "StartCategoryScan", "SyncUpdates",
       "GetExtendedUpdateInfo", "GetExtendedUpdateInfo2", "GetFileLocations", "RefreshCache",
       "SyncPrinterCatalog", "GetAuthorizationCookie", "ReportEventBatch"]
here = os.path.dirname(os.path.abspath(__file__))
captures = os.path.join(here, "..", "..", "shared", "reference", "wsus-captures", "wsus-m0-native")
out = os.path.join(here, "corpus", "wusp")
os.makedirs(out, exist_ok=True)
n = 0
for f in sorted(glob.glob(os.path.join(captures, "*", "*", "request.body"))):
    text = open(f, encoding="utf-8", errors="replace").read()
    m = re.search(r"<(?:\w+:)?Body[^>]*>\s*<(\w+)[^>]*?(?:/>|>(.*)</\1>)\s*</(?:\w+:)?Body>", text, re.S)
    if not m or m.group(1) not in OPS:
        continue
    inner = re.sub(r"<EncryptedData>.*?</EncryptedData>", "<EncryptedData>$C</EncryptedData>", m.group(2) or "", flags=re.S)
    inner = re.sub(r"<CookieData>.*?</CookieData>", "<CookieData>$A</CookieData>", inner, flags=re.S)
    with open(os.path.join(out, f"seed{n:03d}"), "wb") as w:
        w.write(bytes([OPS.index(m.group(1))]) + inner.encode())
    n += 1
if n == 0:
    sys.exit(f"no captured requests under {captures}")
print(f"{n} seeds in {out}")
