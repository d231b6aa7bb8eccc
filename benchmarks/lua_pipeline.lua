-- wrk script part: send DEPTH pipelined requests per write (wrk ... -- DEPTH).
-- Only used when DEPTH > 1: a script with request() makes wrk build requests
-- dynamically, which costs the load generator CPU.
init = function(args)
   local depth = tonumber(args[1]) or 1
   local r = {}
   for i = 1, depth do r[i] = wrk.format() end
   req = table.concat(r)
end

request = function()
   return req
end

