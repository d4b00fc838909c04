"""The JSON Schema keywords tests/support/tlsrpt-schema.json uses, checked strictly
(jsonschema is not a test dependency): type, required, properties, additionalProperties
(false), items, enum, minimum, minLength, format (date-time as RFC 3339 in UTC with "Z",
ip-address, uri). errors(schema, value) lists every violation as "path: what"."""

import datetime
import ipaddress
import re

TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}
KNOWN = {"$comment", "type", "required", "properties", "additionalProperties", "items", "enum", "minimum",
         "minLength", "format"}


def _format_ok(kind, value):
    if kind == "date-time":
        if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", value):
            return False
        try:
            datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            return False
        return True
    if kind == "ip-address":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return False
        return True
    if kind == "uri":
        return re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:\S+", value) is not None
    raise ValueError("unknown format " + kind)


def errors(schema, value, path="$"):
    unknown = set(schema) - KNOWN
    if unknown:
        raise ValueError("the schema uses keywords this validator does not know: %s" % sorted(unknown))
    found = []
    kind = schema.get("type")
    if kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            return [path + ": not an integer"]
    elif kind is not None and (not isinstance(value, TYPES[kind]) or (kind != "boolean" and isinstance(value, bool))):
        return [path + ": not " + kind]
    if "enum" in schema and value not in schema["enum"]:
        found.append("%s: %r is not one of the enum" % (path, value))
    if "minimum" in schema and value < schema["minimum"]:
        found.append("%s: below %s" % (path, schema["minimum"]))
    if "minLength" in schema and len(value) < schema["minLength"]:
        found.append(path + ": too short")
    if "format" in schema and not _format_ok(schema["format"], value):
        found.append("%s: %r is not a %s" % (path, value, schema["format"]))
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                found.append("%s: %s missing" % (path, name))
        properties = schema.get("properties", {})
        for name, item in value.items():
            if name in properties:
                found.extend(errors(properties[name], item, "%s.%s" % (path, name)))
            elif schema.get("additionalProperties") is False:
                found.append("%s: %s is not allowed" % (path, name))
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found.extend(errors(schema["items"], item, "%s[%d]" % (path, index)))
    return found
