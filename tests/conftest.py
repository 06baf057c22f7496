"""Root of the test tree. Being a conftest of this folder puts the folder on `sys.path`, so
every test folder can import the shared helpers beside it (`live_server`).

Services and commands under test evaluate models with LightGBM: compiling a model to native
code takes seconds of CPU per model, and the tests that need it (tests/training/
test_training_compiled.py, tests/api/test_api_model.py) turn it on themselves."""

import os

os.environ.setdefault("AGENTLB_MODEL_COMPILE", "false")
