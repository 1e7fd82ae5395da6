"""Builds hammr-bundle.tar.gz the way hammr 3.8.13's `bundle create` does (commands/bundle/bundle.py
do_create, utils/bundle_utils.py recursively_append_to_archive): Python's tarfile in stream mode,
GNU format, a folder added recursively and then each of its children again, the descriptor last.
Run from this directory: python3 hammr-bundle.py"""
import os, tarfile, tempfile

src = tempfile.mkdtemp()
def put(rel, data):
    p = os.path.join(src, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "w") as f:
        f.write(data)
put("run.sh", "#!/bin/sh\necho run\n")
put("conf/a.cfg", "a=1\n")
put("conf/sub/b.cfg", "b=2\n")
put("LICENSE", "Apache-2.0\n")
base = "bundles/my app/1.0/"
bundle_yml = """---
files:
- name: run.sh
  source: bundles/my app/1.0/run.sh
- files:
  - files: []
    name: a.cfg
    source: bundles/my app/1.0/conf/a.cfg
  - files:
    - files: []
      name: b.cfg
      source: bundles/my app/1.0/conf/sub/b.cfg
    name: sub
    source: bundles/my app/1.0/conf/sub
  name: conf
  source: bundles/my app/1.0/conf
license:
  source: bundles/my app/LICENSE
name: my app
version: '1.0'
"""
put("bundle.yml", bundle_yml)
archive_files = [
    [base + "run.sh", "run.sh"],
    [base + "conf", "conf"],
    [base + "conf/a.cfg", "conf/a.cfg"],
    [base + "conf/sub", "conf/sub"],
    [base + "conf/sub/b.cfg", "conf/sub/b.cfg"],
    ["bundles/my app/LICENSE", "LICENSE"],
    ["bundle.yml", "bundle.yml"],
]
def clean(ti):
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.mtime = 0
    return ti
with tarfile.open("hammr-bundle.tar.gz", "w|gz", format=tarfile.GNU_FORMAT) as tar:
    for arc, rel in archive_files:
        tar.add(os.path.join(src, rel), arcname=arc, filter=clean)
