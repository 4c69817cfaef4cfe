"""The infershift Pulumi program: `pulumi up -s <stack>` (stacks/Pulumi.<stack>.yaml).

All logic lives in components.program so `python -m components.render` runs the same code.
"""
from components.program import main

main()
