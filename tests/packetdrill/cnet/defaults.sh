#!/bin/bash
# cnet's own packetdrill scripts run against libcnet_packetdrill.so, which applies Linux's
# defaults itself (linux_profile); nothing to set on the host.
exit 0
