"""One module per command, named for it: each takes plain arguments and returns a result (a frozen
dataclass) or raises a WasmGitopsError; renderer/cli.py turns options into the arguments, the result
into a reporter's text and an exit code."""
