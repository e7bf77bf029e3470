"""The Dockerfile's final stage: distroless (nonroot) or scratch, a numeric non-root USER, no RUN
(no shell there), no EXPOSE, the exec-form ENTRYPOINT and the built binary; a `capture` stage;
cargo --locked; and .dockerignore keeps what COPY takes. Run from the repository root."""
import re, sys
lines = [l for l in open("Dockerfile").read().replace("\\\n", " ").splitlines() if l.strip() and not l.lstrip().startswith("#")]
stages, cur = [], None
for l in lines:
    word = l.split()[0].upper()
    if word == "FROM":
        cur = {"from": l, "lines": []}
        stages.append(cur)
    elif cur is not None:
        cur["lines"].append(l)
problems = []
def need(cond, msg):
    if not cond:
        problems.append("Dockerfile: " + msg)
final = stages[-1]
need(re.search(r"gcr\.io/distroless/\S+:nonroot|FROM\s+scratch", final["from"]), "the final stage must be distroless (nonroot) or scratch")
words = [l.split()[0].upper() for l in final["lines"]]
need("RUN" not in words, "no RUN in the final stage (no shell there)")
need("EXPOSE" not in words, "the final stage exposes nothing")
users = [l.split()[1] for l in final["lines"] if l.split()[0].upper() == "USER"]
need(users and re.fullmatch(r"[1-9][0-9]*(:[1-9][0-9]*)?", users[-1]), f"the final stage needs a numeric non-root USER, got {users}")
entry = [l for l in final["lines"] if l.split()[0].upper() == "ENTRYPOINT"]
need(entry and entry[-1].split(None, 1)[1].startswith("["), "ENTRYPOINT in exec form")
need(any("COPY --from=build" in l and "fedimds" in l for l in final["lines"]), "the final stage copies the built binary")
need(any("AS capture" in s["from"] for s in stages), "a `capture` stage (the init container image)")
need(any("--locked" in l for s in stages for l in s["lines"]), "cargo build --locked")
# What COPY takes from the context must survive .dockerignore.
ignore = open(".dockerignore").read()
for s in stages:
    for l in s["lines"]:
        parts = l.split()
        if parts[0].upper() == "COPY" and not any(p.startswith("--from") for p in parts):
            for src in [p for p in parts[1:-1] if not p.startswith("--")]:
                need("!" + src.rstrip("/") in ignore or "!" + src in ignore, f".dockerignore drops {src}")
if problems:
    sys.exit("\n".join(problems))
