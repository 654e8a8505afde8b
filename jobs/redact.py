"""Job errors as clients see them: without the server's paths, URLs or addresses.

A failed job's error is stored in its record, which clients read; the engine's messages name the places a job reads
and writes (the drivers, the cube and its lock, the checkpoint file, the Dask scheduler) as the server knows them.
`public_message` puts each known place's public name in its stead, then replaces whatever still looks like an
absolute path or a URL with SERVER_PATH, so a place nobody listed does not leak either.
"""

import os
import re
from collections.abc import Mapping

import fsspec

SERVER_PATH = "<server path>"
# a URL (scheme://...), or an absolute path: a '/' not after a word, ".", "~", "-" or a public name (so not "1/8")
_PLACE = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s'"`,;()<>]+|(?<![\w.~>-])/[^\s'"`,;()<>]+""")


def public_message(message: str, places: Mapping[str, str]) -> str:
    """``message`` with every place of ``places`` (server path or URL -> public name) named publicly, in each form
    it may take in a message (as given, without its protocol, made absolute), and any other path or URL hidden."""
    names = {form: name for place, name in places.items() if place for form in _forms(place)}
    if names:  # one pass, longest first: a cube before the folder holding it, and no name replaced again
        known = re.compile("|".join(map(re.escape, sorted(names, key=len, reverse=True))))
        message = known.sub(lambda match: names[match.group()], message)
    return _PLACE.sub(SERVER_PATH, message)


def _forms(place: str) -> set[str]:
    """How a message may spell ``place``: as given, without its protocol (fsspec's paths), and made absolute. Forms
    without a '/' are left out: a bare word cannot be told from prose (and is no server path)."""
    protocol, path = fsspec.core.split_protocol(place)
    forms = {place, path.rstrip("/")} | ({os.path.abspath(place)} if protocol is None else set())
    return {form for form in forms if "/" in form}
