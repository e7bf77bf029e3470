"""README.md's "## Deploy": each fenced snippet is marked <!-- from: FILE --> and is verbatim in
FILE (or in FILE's comments, with the marker taken off). Run from the repository root."""
import re, sys
readme = open("README.md").read()
m = re.search(r"^## Deploy\n(.*?)(?=^## )", readme, re.S | re.M)
if not m:
    sys.exit("README.md has no '## Deploy' section")
section = m.group(1)
problems, n = [], 0
for block in re.finditer(r"(?:<!-- from: (\S+) -->\n)?```[^\n]*\n(.*?)^```", section, re.S | re.M):
    path, body = block.group(1), block.group(2)
    first = body.splitlines()[0] if body else ""
    if not path:
        problems.append(f"a snippet has no <!-- from: FILE --> marker: {first!r}")
        continue
    try:
        text = open(path).read()
    except OSError:
        problems.append(f"{path} (marked on {first!r}) does not exist")
        continue
    # Commands quoted in a file's comments count with the comment marker taken off.
    decommented = re.sub(r"^[ \t]*#[ \t]*", "", text, flags=re.M)
    if body not in text and body not in decommented:
        problems.append(f"the snippet starting {first!r} is not verbatim in {path}")
    n += 1
if n < 6:
    problems.append(f"only {n} checked snippets in '## Deploy'")
for needle in ("docker buildx build --platform linux/amd64,linux/arm64", "deploy/capture/capture-imds.sh"):
    if needle not in section:
        problems.append(f"'## Deploy' does not mention {needle}")
if problems:
    sys.exit("README.md: " + "\n".join(problems))
print(f"deploy: ok: README '## Deploy': {n} snippets, each verbatim in its file")
