"""The test suite. A package, so that its helpers import by one name everywhere: from the test
modules, from the apps gunicorn serves (``tests.support.e2e_app:create_app()``) and from
bench/.
"""
