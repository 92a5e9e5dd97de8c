-- A HEP3 dissector for tshark (Wireshark 4.0 has none built in): the chunks of
-- https://github.com/sipcapture/HEP as fields hep3.*, and the payload handed to the SIP
-- dissector when the protocol type is 1.  The UDP port comes from $HEP_PORT.
local hep3 = Proto("hep3", "HEP3 (Homer Encapsulation Protocol)")
local f = hep3.fields
f.length = ProtoField.uint16("hep3.length", "Length")
f.family = ProtoField.uint8("hep3.family", "IP family")
f.ip_proto = ProtoField.uint8("hep3.ip_proto", "IP protocol")
f.src_ip = ProtoField.ipv4("hep3.src_ip", "Source IPv4 address")
f.dst_ip = ProtoField.ipv4("hep3.dst_ip", "Destination IPv4 address")
f.src_ip6 = ProtoField.ipv6("hep3.src_ip6", "Source IPv6 address")
f.dst_ip6 = ProtoField.ipv6("hep3.dst_ip6", "Destination IPv6 address")
f.src_port = ProtoField.uint16("hep3.src_port", "Source port")
f.dst_port = ProtoField.uint16("hep3.dst_port", "Destination port")
f.ts_sec = ProtoField.uint32("hep3.ts_sec", "Timestamp seconds")
f.ts_usec = ProtoField.uint32("hep3.ts_usec", "Timestamp microseconds")
f.proto_type = ProtoField.uint8("hep3.proto_type", "Protocol type")
f.capture_id = ProtoField.uint32("hep3.capture_id", "Capture agent id")
f.correlation_id = ProtoField.string("hep3.correlation_id", "Correlation id")
f.payload = ProtoField.bytes("hep3.payload", "Payload")

local by_type = {
  [1] = f.family, [2] = f.ip_proto, [3] = f.src_ip, [4] = f.dst_ip, [5] = f.src_ip6,
  [6] = f.dst_ip6, [7] = f.src_port, [8] = f.dst_port, [9] = f.ts_sec, [10] = f.ts_usec,
  [11] = f.proto_type, [12] = f.capture_id, [17] = f.correlation_id,
}
local sip = Dissector.get("sip")

function hep3.dissector(tvb, pinfo, tree)
  if tvb:len() < 6 or tvb(0, 4):string() ~= "HEP3" then return 0 end
  pinfo.cols.protocol = "HEP3"
  local total = tvb(4, 2):uint()
  local t = tree:add(hep3, tvb(0, total))
  t:add(f.length, tvb(4, 2))
  local offset, payload, kind = 6, nil, nil
  while offset + 6 <= total do
    local chunk = tvb(offset + 2, 2):uint()
    local length = tvb(offset + 4, 2):uint()
    if length < 6 or offset + length > total then break end
    if length > 6 then
      local value = tvb(offset + 6, length - 6)
      if chunk == 15 then
        payload = value
        t:add(f.payload, value)
      elseif by_type[chunk] then
        t:add(by_type[chunk], value)
        if chunk == 11 then kind = value:uint() end
      end
    end
    offset = offset + length
  end
  if payload and kind == 1 then sip:call(payload:tvb(), pinfo, tree) end
  return total
end

DissectorTable.get("udp.port"):add(tonumber(os.getenv("HEP_PORT") or "9060"), hep3)
