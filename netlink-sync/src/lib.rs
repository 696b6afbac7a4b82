//! netlink-sync: learn links, addresses, routes and neighbours from Linux.
