"""``python -m trainables.data.synthetic OUT --images N --seed S``."""

from trainables.data.synthetic import main

main()
