"""Root of the test tree. Being a conftest of this folder puts the folder on `sys.path`, so
every test folder can import the shared helpers beside it (`live_server`)."""
