from renderer.cli import entry

entry()
