#!/usr/bin/env python3
"""Builds a minimal base image offline, from Debian's busybox-static.

make-base-image.py OUT.tar [NAME]

Writes an OCI image layout tar (what `molde load` and `skopeo copy
oci-archive:` read) holding one gzip layer: /bin/busybox, a symlink per applet,
/etc/passwd, /etc/group and an empty /tmp. NAME defaults to
localhost/molde/busybox:latest.
"""
import gzip, hashlib, io, json, os, subprocess, sys, tarfile

out = sys.argv[1]
name = sys.argv[2] if len(sys.argv) > 2 else "localhost/molde/busybox:latest"
busybox = "/bin/busybox"
applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()

def entry(t, path, mode, data=None, link=None, kind=tarfile.REGTYPE):
    ti = tarfile.TarInfo(path)
    ti.mode, ti.mtime, ti.type = mode, 0, kind
    if link:
        ti.linkname = link
    if data is not None:
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
    else:
        t.addfile(ti)

raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
    for d, mode in [("bin", 0o755), ("etc", 0o755), ("root", 0o700), ("tmp", 0o1777)]:
        entry(t, d, mode, kind=tarfile.DIRTYPE)
    entry(t, "bin/busybox", 0o755, open(busybox, "rb").read())
    for a in sorted(set(applets) - {"busybox"}):
        entry(t, f"bin/{a}", 0o777, link="busybox", kind=tarfile.SYMTYPE)
    entry(t, "etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    entry(t, "etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")
raw = raw.getvalue()
layer = gzip.compress(raw, mtime=0)
blobs = {}

def blob(data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[d] = data
    return d

arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
config = json.dumps({"architecture": arch, "os": "linux",
                     "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
                     "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
                     "history": [{"created_by": "deploy/make-base-image.py (busybox-static)"}]}).encode()
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(config), "size": len(config)},
                       "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob(layer), "size": len(layer)}]}).encode()
md = blob(manifest)
tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
index = json.dumps({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
                    "size": len(manifest), "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag}}]}).encode()
with tarfile.open(out, "w") as t:
    entry(t, "oci-layout", 0o644, b'{"imageLayoutVersion":"1.0.0"}')
    for d, data in blobs.items():
        entry(t, "blobs/sha256/" + d[7:], 0o644, data)
    entry(t, "index.json", 0o644, index)
print(md)
