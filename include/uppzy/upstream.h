// Everything about Uppzy's HTTP API in one include, kept so existing `#include "uppzy/upstream.h"`
// lines go on compiling. New code includes what it uses: upstream_client.h (the UpstreamClient
// interface), uppzy_client.h (the libcurl client) or parse_exchange.h (the pure mapping).
#pragma once

#include "uppzy/parse_exchange.h"
#include "uppzy/uppzy_client.h"
#include "uppzy/upstream_client.h"
