"""What the store's history says: bounce patterns by country, operator, hour and
number (``stats``), for `bounceback stats`, the admin API and reports. Reads the store;
decides nothing and writes nothing.
"""
