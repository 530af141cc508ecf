#!/usr/bin/env bash
# The everyday walk-through (issue 26): from a fresh clone of REPO, in the venv VENV (made with
# the README's install command), a folder of JPEG, PNG, HEIC, DNG, TIFF and GIF files archived with
# what was not taken reported, show/ls/restore by the names on disk, and a lost compressed file
# recovered from the vault through the documented workflow (docs/operations.md). Needs ../shared/data/kodak.
#   REPO=/path/to/archiver VENV=/path/to/venv OUT=/tmp/walk bash bench/everyday_walkthrough.sh
set -u
OUT=${OUT:-/tmp/everyday-walk}; rm -rf "$OUT"; git clone -q "${REPO:-.}" "$OUT"; ln -s "$(cd "${REPO:-.}" && cd .. && pwd)/shared" "$(dirname "$OUT")/shared" 2>/dev/null; cd "$OUT"
. "${VENV:?set VENV to the venv made by the README}/bin/activate"
pip install -q --no-deps -e . -e packages/archiver-weights-archive 2>&1 | grep -v WARNING
export ARCHIVER_HOME=$PWD/demo/state
mkdir -p demo/mixed/phone demo/mixed/camera demo/mixed/scans
python - <<'PY'
from PIL import Image
import pillow_heif, shutil
pillow_heif.register_heif_opener()
K='../shared/data/kodak/'
shutil.copy(K+'kodim03.png','demo/mixed/scans/kodim03.png')
shutil.copy(K+'kodim20.png','demo/mixed/scans/kodim20.png')
Image.open(K+'kodim05.png').convert('RGB').save('demo/mixed/camera/kodim05.jpg', quality=92)
Image.open(K+'kodim15.png').save('demo/mixed/phone/IMG_0015.heic', quality=90)
Image.open(K+'kodim23.png').save('demo/mixed/scans/kodim23.tif')
Image.open(K+'kodim08.png').convert('P').save('demo/mixed/scans/kodim08.gif')
from archiver.testing.formats import dng_bytes
open('demo/mixed/camera/DSC_0001.dng','wb').write(dng_bytes())
open('demo/mixed/notes.txt','w').write('not a picture')
PY
ls -la demo/mixed/*
echo '=== dry run'; archiver migrate demo/mixed --dry-run
cp demo/mixed/camera/kodim05.jpg demo/kodim05-orig.jpg; echo "=== real run"; archiver migrate demo/mixed
echo '=== on disk now'; find demo/mixed -type f | sort
echo '=== stats'; archiver stats
echo '=== show by the name seen on disk'; archiver show "$(ls demo/mixed/scans/kodim03.png.* | head -1)"
echo '=== ls by a glob of archived names'; archiver ls 'demo/mixed/**/*.avif'
echo '=== restore by the name seen on disk'; archiver restore "$(ls demo/mixed/scans/kodim23.tif.* | head -1)" --to demo/restored; find demo/restored -type f -exec ls -la {} +
echo '=== lossless loss: the .jxl of kodim05 moved away'; J=demo/mixed/camera/kodim05.jpg.jxl; echo "artifact: $J"; mv "$J" demo/lost-artifact
echo '=== verify'; archiver verify; echo "verify exit=$?"
echo '=== forget first (the trap)'; archiver forget demo/mixed/camera/kodim05.jpg --reason "disk failed"; echo "forget exit=$?"
echo '=== restore as verify says'; archiver restore demo/mixed/camera/kodim05.jpg; echo "restore exit=$?"
cmp demo/mixed/camera/kodim05.jpg demo/kodim05-orig.jpg && echo "kodim05.jpg byte-identical to the original"
echo '=== verify again'; archiver verify; echo "verify exit=$?"
echo '=== now forget'; archiver forget demo/mixed/camera/kodim05.jpg --reason "disk failed"; echo "forget exit=$?"
echo '=== decode a .dlc if any'; D=$(find demo/mixed -name "*.avif" -o -name "*.dlc" | head -1); [ -n "$D" ] && archiver decode "$D" demo/decoded.png && ls -la demo/decoded.png
