"""``python -m luna_sender``: the same command as the ``luna-sender`` entry point."""

from .cli import main

if __name__ == "__main__":
    main()
