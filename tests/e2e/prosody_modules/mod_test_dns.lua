-- mod_test_dns: answers Prosody's DNS lookups for test domains from a table in the config,
-- so that a private Prosody finds its test peers without touching the machine's resolver.
-- Written for Prosody 0.12 (the idea of the community mod_srvinjection).
--
-- Both DNS back ends of Prosody 0.12 (net.adns on net.dns, and net.unbound, which
-- util.dependencies installs as "net.adns" when lua-unbound is present) expose a module table
-- with resolver(); net.resolvers.service and net.resolvers.basic call adns.resolver() for every
-- lookup. This module replaces that function with one whose :lookup() answers listed names itself.
--
-- Config (global section):
--   modules_enabled = { ..., "test_dns" }
--   plugin_paths = { "/path/to/tests/e2e/prosody_modules" }
--   test_dns_srv = {                       -- domain -> { target, port } for _xmpp-server._tcp
--       ["p2.test"] = { "127.0.0.12", 5269 };
--       -- or several targets, tried in this order (SRV priorities 0, 1, ...):
--       ["c.test"] = { { "127.0.0.131", 5269 }; { "127.0.0.132", 5269 } };
--   }
--   test_dns_a = { ["host.test"] = "127.0.0.12" }   -- optional extra A/AAAA records
--   test_dns_strict = true                 -- default: names not listed get an empty answer
--                                          -- (NXDOMAIN) instead of going to the real resolver

module:set_global();

local adns = require "net.adns";
local timer = require "util.timer";
local inet_pton = require "util.net".pton;

local NXDOMAIN, NOERROR = "NXDOMAIN", "NOERROR";

local function lower(s) return s and s:lower():gsub("%.$", "") or s; end

local function ip_family(addr)
	local packed = addr and inet_pton(addr);
	if not packed then return nil; end
	return #packed == 4 and "A" or #packed == 16 and "AAAA" or nil;
end

-- Builds { [qname] = { [qtype] = answer } } from the config.
local function build_zone()
	local srv = module:get_option("test_dns_srv", {});
	local extra_a = module:get_option("test_dns_a", {});
	local zone = {};
	local function add(qname, qtype, record)
		qname = lower(qname);
		zone[qname] = zone[qname] or {};
		zone[qname][qtype] = zone[qname][qtype] or {};
		table.insert(zone[qname][qtype], record);
	end
	for domain, entry in pairs(srv) do
		local targets = type(entry[1]) == "table" and entry or { entry };
		for i, t in ipairs(targets) do
			local target, port = t[1] or t.host, tonumber(t[2] or t.port or 5269);
			add("_xmpp-server._tcp." .. domain, "SRV",
				{ srv = { priority = i - 1, weight = 0, port = port, target = target } });
			local fam = ip_family(target);
			if fam == "A" then add(domain, "A", { a = target });
			elseif fam == "AAAA" then add(domain, "AAAA", { aaaa = target }); end
		end
	end
	for name, addr in pairs(extra_a) do
		local fam = ip_family(addr);
		if fam == "A" then add(name, "A", { a = addr });
		elseif fam == "AAAA" then add(name, "AAAA", { aaaa = addr });
		else module:log("error", "test_dns_a: %s is not an IP address (for %s)", tostring(addr), name); end
	end
	return zone;
end

local zone = build_zone();
local strict = module:get_option_boolean("test_dns_strict", true);

-- Returns an answer table shaped like net.adns/net.unbound answers, or nil to pass the query on.
local function answer_for(qname, qtype, qclass)
	qtype = (qtype or "A"):upper();
	if (qclass or "IN"):upper() ~= "IN" then return nil; end
	local name = lower(qname);
	local known = zone[name];
	if not known and not strict then return nil; end
	local records = known and known[qtype] or {};
	local answer = { qname = qname, qtype = qtype, qclass = "IN", secure = false,
		status = known and NOERROR or NXDOMAIN };
	for i, record in ipairs(records) do answer[i] = record; end
	return answer;
end

local original_resolver = adns.resolver;

local function make_resolver()
	local inner; -- the real resolver, created only when a query is passed on
	local wrapper = {};
	function wrapper:lookup(callback, qname, qtype, qclass)
		local answer = answer_for(qname, qtype, qclass);
		if not answer then
			inner = inner or original_resolver();
			return inner:lookup(callback, qname, qtype, qclass);
		end
		module:log("debug", "test_dns: %s %s -> %d record(s) (%s)", qname, qtype or "A", #answer, answer.status);
		-- Answer asynchronously, as a real lookup would.
		timer.add_task(0, function ()
			local ok, err = pcall(callback, answer);
			if not ok then module:log("error", "Error in DNS response handler: %s", err); end
		end);
		return true;
	end
	function wrapper:lookup_promise(qname, qtype, qclass)
		local promise = require "util.promise";
		return promise.new(function (resolve, reject)
			self:lookup(function (answer, err)
				if answer then resolve(answer); else reject(err); end
			end, qname, qtype, qclass);
		end);
	end
	-- net.adns users sometimes reach into _resolver (settimeout/closeall).
	wrapper._resolver = setmetatable({}, { __index = function (_, key)
		inner = inner or original_resolver();
		local r = inner._resolver;
		local v = r and r[key];
		if type(v) == "function" then return function (_, ...) return v(r, ...); end end
		return v;
	end });
	return wrapper;
end

adns.resolver = make_resolver;
local n = 0; for _ in pairs(zone) do n = n + 1; end
module:log("info", "test_dns: answering DNS for %d name(s) from the config (strict=%s)", n, tostring(strict));

function module.unload()
	if adns.resolver == make_resolver then
		adns.resolver = original_resolver;
	end
end
