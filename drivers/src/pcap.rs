//! pcap recording wrapper for any port (being written).
