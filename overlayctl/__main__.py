"""python -m overlayctl"""

from overlayctl.cli import main

main()
