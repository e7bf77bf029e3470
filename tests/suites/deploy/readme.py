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


def check_snippets(text, prefix, comments_count):
    """Checks every fenced snippet in `text`; returns how many were checked. With
    `comments_count`, a command quoted in its file's comments counts with the marker taken off."""
    checked = 0
    blocks = list(re.finditer(r"(?:<!-- from: (\S+) -->\n)?```[^\n]*\n(.*?)^```", text, re.S | re.M))
    for block in blocks:
        path, body = block.group(1), block.group(2)
        first = body.splitlines()[0] if body else ""
        if not path:
            problems.append(f"{prefix}a snippet has no <!-- from: FILE --> marker: {first!r}")
            continue
        try:
            source = open(path).read()
        except OSError:
            problems.append(f"{path} (marked on {first!r}) does not exist")
            continue
        decommented = re.sub(r"^[ \t]*#[ \t]*", "", source, flags=re.M) if comments_count else source
        if body not in source and body not in decommented:
            problems.append(f"{prefix}the snippet starting {first!r} is not verbatim in {path}")
        checked += 1
    return checked, len(blocks)


n += check_snippets(section, "", True)[0]
if n < 6:
    problems.append(f"only {n} checked snippets in '## Deploy'")
# The monitoring and proxy subsections: every snippet marked and verbatim too.
for title in ("### Alerts and dashboard", "### Behind a proxy"):
    sub = re.search(rf"^{re.escape(title)}\n(.*?)(?=^##)", readme, re.S | re.M)
    if not sub:
        problems.append(f"README.md has no '{title}' section")
        continue
    checked, found = check_snippets(sub.group(1), f"'{title}': ", False)
    if not found:
        problems.append(f"'{title}' has no snippet")
    n += checked
for needle in ("docker buildx build --platform linux/amd64,linux/arm64", "deploy/capture/capture-imds.sh"):
    if needle not in section:
        problems.append(f"'## Deploy' does not mention {needle}")
if problems:
    sys.exit("README.md: " + "\n".join(problems))
print(f"deploy: ok: README '## Deploy': {n} snippets, each verbatim in its file")
