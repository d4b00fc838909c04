"""The one option scanner of the chain's programs (argparse costs ~10 ms a process).

scan(words, flags, valued, numeric, nonempty, repeated) -> ({field: value}, rest)

words are argv[1:] as bytes. Options end at "--" (dropped) or at the first word that
does not start with "-" (or is "-" itself). A valued option is "-xVALUE", "-x VALUE",
"--long=VALUE" or "--long VALUE"; a flag takes no value and gives True. Values are
str (surrogateescape), not empty for a field in nonempty; numeric ones ASCII digits (at most 9) made int. A later
occurrence overrides an earlier one, except for a field in repeated: its value is the
list of every occurrence's value. Anything else raises BadOption(text).
"""


import sys

_FS_ENCODING = sys.getfilesystemencoding()


class BadOption(Exception):
    pass


# os.fsencode and os.fsdecode without os.py, which costs about 1 ms of CPU at every
# start of the programs that need no more of it than this (qmail-remote-io, tlsc-io)
def fsencode(word):
    return word if isinstance(word, bytes) else word.encode(_FS_ENCODING, "surrogateescape")


def fsdecode(word):
    return word if isinstance(word, str) else word.decode(_FS_ENCODING, "surrogateescape")


def scan(words, flags, valued, numeric=(), nonempty=(), repeated=()):
    found = {}
    i = 0
    while i < len(words):
        arg = words[i].decode("utf-8", "surrogateescape")
        if arg == "--":
            return found, words[i + 1:]
        if not arg.startswith("-") or arg == "-":
            break
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg[:2], "", arg[2:])
        if name in flags and not value and not eq:
            found[flags[name]] = True
            i += 1
            continue
        field = valued.get(name)
        if field is None:
            raise BadOption("unknown option %s" % name)
        if not value and not eq:
            i += 1
            if i >= len(words):
                raise BadOption("option %s needs a value" % name)
            value = words[i].decode("utf-8", "surrogateescape")
        if not value and field in nonempty:
            raise BadOption("option %s needs a value" % name)
        if field in numeric:
            if not (value.isascii() and value.isdigit()) or len(value) > 9:  # str.isdigit() takes "²"
                raise BadOption("option %s needs a number" % name)
            value = int(value)
        if field in repeated:
            found.setdefault(field, []).append(value)
        else:
            found[field] = value
        i += 1
    return found, words[i:]
