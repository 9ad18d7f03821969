"""Pure simulation functions behind the book's figures and widgets.

Every figure or widget in a chapter gets its data from a function here: deterministic given its
``seed``, no plotting, no global state. The notebooks only draw what these return.
"""
