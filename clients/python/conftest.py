"""pytest set-up: generate the stubs from proto/ before any test module imports them."""

import sys

import gen_stubs

_gen = str(gen_stubs.generate())
if _gen not in sys.path:
    sys.path.insert(0, _gen)
