#!/usr/bin/env python3
"""Generate berth's Rust wire types from an AWS service model (botocore's service-2.json).

    python3 tools/gen-shapes/gen.py --service ecs          # writes crates/model/src/wire/ecs.rs
    python3 tools/gen-shapes/gen.py --service ecs --service ecr --check  # exit 1 if stale

The model is found in the installed botocore package unless --model PATH is given.
The JSON protocol (awsJson1_0 / awsJson1_1) and the query protocol (IAM, STS: form requests,
XML answers) are handled. Query services generate only the operations berth answers (SUBSETS
below) and the shapes they reach: IAM alone has 180 operations.
"""

import argparse
import gzip
import html
import json
import os
import re
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT_DIR = os.path.join(ROOT, "crates", "model", "src", "wire")

# Query-protocol services: the operations berth answers (and so generates shapes for).
SUBSETS = {
    "iam": [
        "CreateRole", "GetRole", "ListRoles", "DeleteRole", "UpdateAssumeRolePolicy",
        "PutRolePolicy", "GetRolePolicy", "ListRolePolicies", "DeleteRolePolicy",
        "CreatePolicy", "GetPolicy", "GetPolicyVersion", "ListPolicies", "DeletePolicy",
        "AttachRolePolicy", "DetachRolePolicy", "ListAttachedRolePolicies",
    ],
    "sts": ["AssumeRole", "GetCallerIdentity"],
}

RUST_KEYWORDS = {
    "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for",
    "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return",
    "self", "Self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use",
    "where", "while", "async", "await", "dyn", "abstract", "become", "box", "do", "final",
    "macro", "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "gen",
}


def find_model(service):
    """The newest service-2.json(.gz) of `service` in the installed botocore, and its version."""
    try:
        import botocore  # noqa: PLC0415
    except ImportError:
        sys.exit("botocore is not installed: pip install botocore, or pass --model PATH")
    base = os.path.join(os.path.dirname(botocore.__file__), "data", service)
    if not os.path.isdir(base):
        sys.exit("botocore %s has no service %r" % (botocore.__version__, service))
    versions = sorted(os.listdir(base))
    path = os.path.join(base, versions[-1], "service-2.json")
    if os.path.exists(path + ".gz"):
        path += ".gz"
    return path, botocore.__version__


def botocore_version_of(path):
    """The version of the botocore package an explicit model path lies in, if it does."""
    d = os.path.dirname(os.path.abspath(path))
    while d != os.path.dirname(d):
        init = os.path.join(d, "botocore", "__init__.py")
        if os.path.basename(d) == "botocore":
            init = os.path.join(d, "__init__.py")
        if os.path.exists(init):
            with open(init, encoding="utf-8") as f:
                m = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", f.read())
            if m:
                return m.group(1)
        d = os.path.dirname(d)
    return "unknown"


def load(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def snake(name):
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    s = s.replace("-", "_").lower()
    if s in ("self", "super", "crate"):  # cannot be raw identifiers
        return s + "_"
    if s in RUST_KEYWORDS:
        return "r#" + s
    return s


def screaming(name):
    return snake(name).replace("r#", "").upper()


def first_sentence(doc):
    if not doc:
        return ""
    text = re.sub(r"<[^>]+>", " ", doc)
    text = html.unescape(text)
    text = " ".join(text.split())
    m = re.match(r"(.+?[.!?])(\s|$)", text)
    s = m.group(1) if m else text
    if len(s) > 200:
        s = s[:197].rstrip() + "..."
    for c in "\\[]<>":
        s = s.replace(c, "\\" + c)
    return s


class Gen:
    def __init__(self, model, only=None):
        self.model = model
        self.shapes = model["shapes"]
        self._checks = None
        meta = model["metadata"]
        self.query = "query" in (meta.get("protocols") or [meta.get("protocol")])
        if only:
            self.restrict(only)

    def restrict(self, ops):
        """Keep only the operations `ops` and the shapes they reach."""
        missing = [o for o in ops if o not in self.model["operations"]]
        if missing:
            sys.exit("operations not in the model: %s" % ", ".join(missing))
        self.model = dict(self.model)
        self.model["operations"] = {o: self.model["operations"][o] for o in ops}
        keep, todo = set(), []
        for op in self.model["operations"].values():
            for k in ("input", "output"):
                if k in op:
                    todo.append(op[k]["shape"])
            todo.extend(e["shape"] for e in op.get("errors", []))
        while todo:
            n = todo.pop()
            if n in keep:
                continue
            keep.add(n)
            sh = self.shapes[n]
            todo.extend(m["shape"] for m in sh.get("members", {}).values())
            for k in ("member", "key", "value"):
                if k in sh:
                    todo.append(sh[k]["shape"])
        self.shapes = {n: sh for n, sh in self.shapes.items() if n in keep}

    def rust_type(self, shape_name):
        s = self.shapes[shape_name]
        t = s["type"]
        if t == "string":
            return "String"
        if t == "integer":
            return "i32"
        if t == "long":
            return "i64"
        if t == "boolean":
            return "bool"
        if t in ("double", "float"):
            return "f64"
        if t == "timestamp":
            # JSON: epoch seconds; query/XML: ISO 8601 text, as the wire carries it.
            return "String" if self.query else "f64"
        if t == "blob":
            return "String"
        if t == "list":
            return "Vec<%s>" % self.rust_type(s["member"]["shape"])
        if t == "map":
            return "std::collections::BTreeMap<String, %s>" % self.rust_type(s["value"]["shape"])
        if t == "structure":
            return shape_name
        raise ValueError("unknown type %s for %s" % (t, shape_name))

    def reaches(self, start, target, seen=None):
        """Whether `start` contains `target` by value (not through a list/map)."""
        seen = seen or set()
        s = self.shapes[start]
        if s["type"] != "structure":
            return False
        for m in s.get("members", {}).values():
            n = m["shape"]
            if n == target:
                return True
            if n in seen or self.shapes[n]["type"] != "structure":
                continue
            seen.add(n)
            if self.reaches(n, target, seen):
                return True
        return False

    def field_type(self, owner, member_shape):
        t = self.rust_type(member_shape)
        if self.shapes[member_shape]["type"] == "structure" and self.reaches(member_shape, owner):
            return "Box<%s>" % t
        return t

    def checks_of(self, name):
        """Whether a value of shape `name` has anything to validate (fixed point over cycles)."""
        if self._checks is None:
            has = {}
            for n, s in self.shapes.items():
                t = s["type"]
                if t == "string":
                    has[n] = "enum" in s or "min" in s or "max" in s
                elif t in ("integer", "long", "double", "float", "list", "map"):
                    has[n] = "min" in s or "max" in s
                elif t == "structure":
                    has[n] = bool(s.get("required"))
                else:
                    # blob: min/max bound the decoded bytes, not the base64 text; not checked.
                    has[n] = False
            changed = True
            while changed:
                changed = False
                for n, s in self.shapes.items():
                    if has[n]:
                        continue
                    t = s["type"]
                    if t == "list":
                        inner = [s["member"]["shape"]]
                    elif t == "map":
                        inner = [s["key"]["shape"], s["value"]["shape"]]
                    elif t == "structure":
                        inner = [m["shape"] for m in s.get("members", {}).values()]
                    else:
                        inner = []
                    if any(has[i] for i in inner):
                        has[n] = True
                        changed = True
            self._checks = has
        return self._checks[name]

    def check_value(self, shape, v, p, depth):
        """Rust statements checking the value `v` (a reference) of `shape` at path expression `p`."""
        s = self.shapes[shape]
        t = s["type"]
        out = []
        if t == "string":
            if "enum" in s:
                out.append("check_enum(%s, %s, %s_VALUES, errs);" % (p, v, screaming(shape)))
            if "min" in s or "max" in s:
                out.append("check_len(%s, %s.chars().count(), %s, %s, errs);" % (
                    p, v, opt(s.get("min")), opt(s.get("max"))))
        elif t in ("integer", "long", "double", "float"):
            if "min" in s or "max" in s:
                num = "*%s" % v if t in ("double", "float") else "*%s as f64" % v
                out.append("check_range(%s, %s, %s, %s, errs);" % (
                    p, num, optf(s.get("min")), optf(s.get("max"))))
        elif t in ("list", "map"):
            if "min" in s or "max" in s:
                out.append("check_len(%s, %s.len(), %s, %s, errs);" % (
                    p, v, opt(s.get("min")), opt(s.get("max"))))
            i, x, q = "i%d" % depth, "x%d" % depth, "p%d" % depth
            if t == "list":
                inner = s["member"]["shape"]
                if self.checks_of(inner):
                    body = self.check_value(inner, x, "&" + q, depth + 1)
                    out.append("for (%s, %s) in %s.iter().enumerate() {" % (i, x, v))
                    out.append("let %s = join(%s, &%s.to_string());" % (q, p, i))
                    out.extend(body)
                    out.append("}")
            else:
                key, val = s["key"]["shape"], s["value"]["shape"]
                kb = self.check_value(key, i, "&" + q, depth + 1) if self.checks_of(key) else []
                vb = self.check_value(val, x, "&" + q, depth + 1) if self.checks_of(val) else []
                if kb or vb:
                    out.append("for (%s, %s) in %s.iter() {" % (i, x if vb else "_", v))
                    out.append("let %s = join(%s, %s);" % (q, p, i))
                    out.extend(kb)
                    out.extend(vb)
                    out.append("}")
        elif t == "structure":
            if self.checks_of(shape):
                out.append("%s.validate(%s, errs);" % (v, p))
        return out

    def validate_stmts(self, mname, mshape, required):
        """Rust statements validating `self.<field>` (an Option)."""
        field = snake(mname)
        path = 'join(path, "%s")' % mname
        out = []
        if required:
            out.append("if self.%s.is_none() {" % field)
            out.append("errs.push(FieldError::new(%s, FieldErrorKind::Missing));" % path)
            out.append("}")
        checks = self.check_value(mshape, "v", "&p", 0)
        if checks:
            out.append("if let Some(v) = &self.%s {" % field)
            out.append("let p = %s;" % path)
            out.extend(checks)
            out.append("}")
        return out

    def gen(self, version, service):
        meta = self.model["metadata"]
        lines = []
        w = lines.append
        w("// Generated by tools/gen-shapes/gen.py from botocore %s %s %s. Do not edit." % (
            version, service, meta.get("apiVersion")))
        w("// Every member is optional (`Option<T>`): the server checks `required` with `Validate`.")
        w("// Model documentation is shortened to its first sentence.")
        w("#![allow(rustdoc::bare_urls, rustdoc::broken_intra_doc_links)]")
        w("")
        w("use serde::{Deserialize, Serialize};")
        w("")
        w("@@IMPORTS@@")
        w("")
        w("/// The `X-Amz-Target` prefix of this service.")
        w('pub const TARGET_PREFIX: &str = "%s";' % meta.get("targetPrefix", ""))
        w("/// The SigV4 signing name of this service.")
        w('pub const SIGNING_NAME: &str = "%s";' % meta.get("signingName", meta.get("endpointPrefix")))
        w("")
        # operations
        w("/// Every operation of the service.")
        w("pub const OPERATIONS: &[Operation] = &[")
        for name in sorted(self.model["operations"]):
            op = self.model["operations"][name]
            inp = op.get("input", {}).get("shape")
            outp = op.get("output", {}).get("shape")
            errs = ", ".join('"%s"' % e["shape"] for e in op.get("errors", []))
            w('    Operation { name: "%s", input: %s, output: %s, errors: &[%s] },' % (
                name, 'Some("%s")' % inp if inp else "None", 'Some("%s")' % outp if outp else "None", errs))
        w("];")
        w("")
        w("/// Every error shape of the service, with its HTTP status.")
        w("pub const ERRORS: &[ErrorShape] = &[")
        for name in sorted(self.shapes):
            s = self.shapes[name]
            if not s.get("exception"):
                continue
            status = s.get("error", {}).get("httpStatusCode", 500 if s.get("fault") else 400)
            code = s.get("error", {}).get("code", name)
            w('    ErrorShape { name: "%s", code: "%s", status: %d, fault: %s },' % (
                name, code, status, "true" if s.get("fault") else "false"))
        w("];")
        w("")
        for name in sorted(self.shapes):
            s = self.shapes[name]
            if s["type"] == "string" and "enum" in s:
                vals = ", ".join('"%s"' % v for v in s["enum"])
                w("/// Allowed values of `%s`." % name)
                w("pub const %s_VALUES: &[&str] = &[%s];" % (screaming(name), vals))
        w("")
        for name in sorted(self.shapes):
            s = self.shapes[name]
            if s["type"] != "structure":
                continue
            doc = first_sentence(s.get("documentation"))
            if doc:
                w("/// " + doc)
            w("#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]")
            w("pub struct %s {" % name)
            required = set(s.get("required", []))
            for mname, m in s.get("members", {}).items():
                d = first_sentence(m.get("documentation"))
                if d:
                    w("    /// " + d)
                w('    #[serde(rename = "%s", default, skip_serializing_if = "Option::is_none")]' % mname)
                w("    pub %s: Option<%s>," % (snake(mname), self.field_type(name, m["shape"])))
            w("}")
            w("")
            body = []
            for mname, m in s.get("members", {}).items():
                body.extend(self.validate_stmts(mname, m["shape"], mname in required))
            w("impl Validate for %s {" % name)
            if body:
                w("    fn validate(&self, path: &str, errs: &mut Vec<FieldError>) {")
                lines.extend(body)
                w("    }")
            else:
                w("    fn validate(&self, _path: &str, _errs: &mut Vec<FieldError>) {}")
            w("}")
            w("")
        body = "\n".join(lines) + "\n"
        # Import only the shared helpers this service's code uses (models without length or
        # range constraints need no check_len/check_range).
        helpers = ["ErrorShape", "FieldError", "FieldErrorKind", "Operation", "Validate",
                   "check_enum", "check_len", "check_range", "join"]
        used = [h for h in helpers if re.search(r"\b%s\b" % h, body.replace("@@IMPORTS@@", ""))]
        return body.replace("@@IMPORTS@@", "use super::{%s};" % ", ".join(used))


def opt(v):
    return "Some(%d)" % v if v is not None else "None"


def optf(v):
    return "Some(%r)" % float(v) if v is not None else "None"


def rustfmt(text):
    # Run from the workspace root so rustfmt picks up the same configuration as `cargo fmt`.
    p = subprocess.run(["rustfmt", "--edition", "2024", "--emit", "stdout"], input=text,
                       capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        sys.exit("rustfmt failed:\n" + p.stderr)
    return p.stdout


def generate(service, model_path=None):
    if model_path:
        path, version = model_path, botocore_version_of(model_path)
    else:
        path, version = find_model(service)
    model = load(path)
    meta = model["metadata"]
    protocols = meta.get("protocols") or [meta.get("protocol")]
    if "json" not in protocols and "query" not in protocols:
        sys.exit("%s: protocol %s is not handled (json, query)" % (service, protocols))
    only = None
    if "json" not in protocols:
        if service not in SUBSETS:
            sys.exit("%s: a query service needs its operations listed in SUBSETS" % service)
        only = SUBSETS[service]
    return rustfmt(Gen(model, only).gen(version, service))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--service", required=True, action="append",
                    help="botocore service name, e.g. ecs (repeatable)")
    ap.add_argument("--model", help="path to service-2.json(.gz) (only with one --service)")
    ap.add_argument("--out", help="output file (default crates/model/src/wire/<service>.rs)")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if the committed output differs from a fresh generation")
    a = ap.parse_args()
    if len(a.service) > 1 and (a.model or a.out):
        ap.error("--model and --out need a single --service")
    stale = False
    for service in a.service:
        text = generate(service, a.model)
        out = a.out or os.path.join(OUT_DIR, service.replace("-", "_") + ".rs")
        if a.check:
            cur = open(out, encoding="utf-8").read() if os.path.exists(out) else ""
            if cur != text:
                print("%s is stale: regenerate with python3 tools/gen-shapes/gen.py --service %s"
                      % (os.path.relpath(out, ROOT), service))
                stale = True
            else:
                print("%s is up to date" % os.path.relpath(out, ROOT))
            continue
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
        print("wrote %s (%d lines, %d bytes)" % (os.path.relpath(out, ROOT), text.count("\n"), len(text)))
    if stale:
        sys.exit(1)


if __name__ == "__main__":
    main()
