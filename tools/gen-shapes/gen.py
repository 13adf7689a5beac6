#!/usr/bin/env python3
"""Generate berth's Rust wire types from an AWS service model (botocore's service-2.json).

    python3 tools/gen-shapes/gen.py --service ecs          # writes crates/model/src/wire/ecs.rs
    python3 tools/gen-shapes/gen.py --service ecs --check  # exit 1 if the file is stale

The model is found in the installed botocore package unless --model PATH is given.
Only the JSON protocol is handled (awsJson1_0 / awsJson1_1).
"""

import argparse
import glob
import gzip
import html
import json
import keyword
import os
import re
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT_DIR = os.path.join(ROOT, "crates", "model", "src", "wire")

RUST_KEYWORDS = {
    "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for",
    "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return",
    "self", "Self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use",
    "where", "while", "async", "await", "dyn", "abstract", "become", "box", "do", "final",
    "macro", "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "gen",
}


def find_model(service):
    import botocore  # noqa: PLC0415

    base = os.path.join(os.path.dirname(botocore.__file__), "data", service)
    versions = sorted(os.listdir(base))
    path = os.path.join(base, versions[-1], "service-2.json")
    if os.path.exists(path + ".gz"):
        return path + ".gz", botocore.__version__
    return path, botocore.__version__


def load(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def snake(name):
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    s = s.replace("-", "_").lower()
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
    return s.replace("[", "\\[").replace("]", "\\]")


class Gen:
    def __init__(self, model):
        self.model = model
        self.shapes = model["shapes"]
        self.boxed = set()

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
            return "f64"
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

    def validate_stmts(self, owner, mname, mshape, required, indent):
        """Rust statements validating `self.<field>` (an Option)."""
        field = snake(mname)
        s = self.shapes[mshape]
        t = s["type"]
        out = []
        pad = " " * indent
        path = 'join(path, "%s")' % mname
        if required:
            out.append(pad + "if self.%s.is_none() {" % field)
            out.append(pad + "    errs.push(FieldError::new(%s, FieldErrorKind::Missing));" % path)
            out.append(pad + "}")
        checks = []
        if t == "string":
            if "enum" in s:
                checks.append("check_enum(&p, v, %s_VALUES, errs);" % screaming(mshape))
            if "min" in s or "max" in s:
                checks.append("check_len(&p, v.chars().count(), %s, %s, errs);" % (
                    opt(s.get("min")), opt(s.get("max"))))
        elif t in ("integer", "long"):
            if "min" in s or "max" in s:
                checks.append("check_range(&p, *v as f64, %s, %s, errs);" % (
                    optf(s.get("min")), optf(s.get("max"))))
        elif t in ("list", "map"):
            if "min" in s or "max" in s:
                checks.append("check_len(&p, v.len(), %s, %s, errs);" % (
                    opt(s.get("min")), opt(s.get("max"))))
            inner = s["member"]["shape"] if t == "list" else s["value"]["shape"]
            it = self.shapes[inner]
            if it["type"] == "structure":
                if t == "list":
                    checks.append("for (i, x) in v.iter().enumerate() { x.validate(&join(&p, &i.to_string()), errs); }")
                else:
                    checks.append("for (k, x) in v.iter() { x.validate(&join(&p, k), errs); }")
            elif it["type"] == "string" and "enum" in it:
                if t == "list":
                    checks.append("for (i, x) in v.iter().enumerate() { check_enum(&join(&p, &i.to_string()), x, %s_VALUES, errs); }" % screaming(inner))
        elif t == "structure":
            checks.append("v.validate(&p, errs);")
        if checks:
            out.append(pad + "if let Some(v) = &self.%s {" % field)
            out.append(pad + "    let p = %s;" % path)
            for c in checks:
                out.append(pad + "    " + c)
            out.append(pad + "}")
        return out

    def gen(self, version):
        meta = self.model["metadata"]
        lines = []
        w = lines.append
        w("// Generated by tools/gen-shapes/gen.py from botocore %s %s %s. Do not edit." % (
            version, meta.get("endpointPrefix"), meta.get("apiVersion")))
        w("#![allow(clippy::all, clippy::pedantic, rustdoc::all, non_camel_case_types, unused_variables)]")
        w("")
        w("use serde::{Deserialize, Serialize};")
        w("")
        w("use super::{ErrorShape, FieldError, FieldErrorKind, Operation, Validate, check_enum, check_len, check_range, join};")
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
            w("impl Validate for %s {" % name)
            w("    fn validate(&self, path: &str, errs: &mut Vec<FieldError>) {")
            for mname, m in s.get("members", {}).items():
                for line in self.validate_stmts(name, mname, m["shape"], mname in required, 8):
                    w(line)
            w("    }")
            w("}")
            w("")
        return "\n".join(lines) + "\n"


def opt(v):
    return "Some(%d)" % v if v is not None else "None"


def optf(v):
    return "Some(%r)" % float(v) if v is not None else "None"


def rustfmt(text):
    p = subprocess.run(["rustfmt", "--edition", "2024", "--emit", "stdout"], input=text,
                       capture_output=True, text=True, check=True)
    return p.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--service", required=True, help="botocore service name, e.g. ecs")
    ap.add_argument("--model", help="path to service-2.json(.gz)")
    ap.add_argument("--out", help="output file (default crates/model/src/wire/<service>.rs)")
    ap.add_argument("--check", action="store_true", help="fail if the output file is stale")
    a = ap.parse_args()
    if a.model:
        path, version = a.model, "(explicit model)"
    else:
        path, version = find_model(a.service)
    model = load(path)
    text = rustfmt(Gen(model).gen(version))
    out = a.out or os.path.join(OUT_DIR, a.service.replace("-", "_") + ".rs")
    if a.check:
        cur = open(out, encoding="utf-8").read() if os.path.exists(out) else ""
        if cur != text:
            print("%s is stale: regenerate with %s --service %s" % (out, sys.argv[0], a.service))
            sys.exit(1)
        return
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    print("wrote %s (%d lines)" % (out, text.count("\n")))


if __name__ == "__main__":
    main()
