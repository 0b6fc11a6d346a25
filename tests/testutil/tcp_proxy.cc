#include "tcp_proxy.h"
