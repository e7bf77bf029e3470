"""README.md's "## Deploy": each fenced snippet is marked <!-- from: FILE --> and is verbatim in
FILE (or in FILE's comments, with the marker taken off); so is every snippet of the monitoring
and proxy subsections. Run from the repository root."""
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
# The monitoring and proxy subsections: every snippet marked and verbatim too.
for title in ("### Alerts and dashboard", "### Behind a proxy"):
    sub = re.search(rf"^{re.escape(title)}\n(.*?)(?=^##)", readme, re.S | re.M)
    if not sub:
        problems.append(f"README.md has no '{title}' section")
        continue
    blocks = list(re.finditer(r"(?:<!-- from: (\S+) -->\n)?```[^\n]*\n(.*?)^```", sub.group(1), re.S | re.M))
    if not blocks:
        problems.append(f"'{title}' has no snippet")
    for block in blocks:
        path, body = block.group(1), block.group(2)
        first = body.splitlines()[0] if body else ""
        if not path:
            problems.append(f"'{title}': a snippet has no <!-- from: FILE --> marker: {first!r}")
            continue
        try:
            text = open(path).read()
        except OSError:
            problems.append(f"{path} (marked on {first!r}) does not exist")
            continue
        if body not in text:
            problems.append(f"'{title}': the snippet starting {first!r} is not verbatim in {path}")
        n += 1
for needle in ("docker buildx build --platform linux/amd64,linux/arm64", "deploy/capture/capture-imds.sh"):
    if needle not in section:
        problems.append(f"'## Deploy' does not mention {needle}")
if problems:
    sys.exit("README.md: " + "\n".join(problems))
print(f"deploy: ok: README '## Deploy': {n} snippets, each verbatim in its file")
