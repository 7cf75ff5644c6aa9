"""`python -m slicehub.classroom [--interval=S] [--quota-url=URL] [--site=FILE]`."""

from .service import main

if __name__ == "__main__":
    main()
