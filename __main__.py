"""The infershift Pulumi program: `pulumi up -s <stack>` (stacks/Pulumi.<stack>.yaml).

All logic lives in components.program so `python -m infershift.components.render` runs the same code.
"""
from infershift.components.program import main

main()
