"""Identity and authorization: users, groups, roles, tokens, grants, folders, permission decisions."""
