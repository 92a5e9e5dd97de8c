from twisted.application.service import ServiceMaker

sbc = ServiceMaker("sbc", "sbc.app.service", "sbc session border controller", "sbc")
