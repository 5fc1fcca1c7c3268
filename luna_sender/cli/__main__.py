"""``python -m luna_sender.cli``: kept because scripts and the benchmark start the
service this way."""

from luna_sender.cli.main import main

if __name__ == "__main__":
    main()
