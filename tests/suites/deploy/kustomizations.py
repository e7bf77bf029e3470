"""Every kustomization under deploy/kubernetes lists resources that exist (files inside it, or
directories with their own kustomization.yaml), and every manifest is in one. Prints the
manifests, one a line; exits non-zero with the problems otherwise. Run from the repository root."""
import os, sys, yaml
base = "deploy/kubernetes"
listed, problems = set(), []
for dirpath, _, files in os.walk(base):
    if "kustomization.yaml" not in files:
        continue
    k = yaml.safe_load(open(os.path.join(dirpath, "kustomization.yaml")))
    if k.get("kind") != "Kustomization":
        problems.append(f"{dirpath}/kustomization.yaml: not a Kustomization")
    for r in k.get("resources", []):
        p = os.path.normpath(os.path.join(dirpath, r))
        if os.path.isdir(p):
            if not os.path.isfile(os.path.join(p, "kustomization.yaml")):
                problems.append(f"{dirpath}: resource {r} is a directory without kustomization.yaml")
        elif os.path.isfile(p):
            if not p.startswith(dirpath.rstrip("/") + "/"):
                problems.append(f"{dirpath}: {r} is a file outside the kustomization (kustomize refuses it)")
            listed.add(p)
        else:
            problems.append(f"{dirpath}: resource {r} does not exist")
for dirpath, _, files in os.walk(base):
    for f in files:
        p = os.path.normpath(os.path.join(dirpath, f))
        if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml" and p not in listed:
            problems.append(f"{p} is in no kustomization")
if problems:
    sys.exit("\n".join(problems))
print("\n".join(sorted(listed)))
