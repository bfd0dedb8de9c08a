"""``python -m mistral_np.cli``: the ``mistral-np`` console script, app.py's ``main`` with its exit status.

tests/test_cli_generate.py, tests/test_quantize.py and tests/test_golden.py run the command this way, in a real
process.

next: app.py.
"""

import sys

from .app import main

sys.exit(main())
