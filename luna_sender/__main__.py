"""``python -m luna_sender``: the same command as the ``luna-sender`` entry point."""

from luna_sender.cli.main import main

if __name__ == "__main__":
    main()
